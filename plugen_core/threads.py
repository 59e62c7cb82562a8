"""How many intra-op threads a stage's torch uses: the one place that decides it (the `threads` param).

Measured on 2 cores (docs/performance.md): beside one busy process, a torch process on 2 threads ran a flow step 3x
and a VAE step up to 10x slower than alone, since its threads spin at every op's barrier for a partner that is off
the CPU; on 1 thread the same step ran 1.7x slower, about what losing a core should cost. Asking OpenMP to sleep
instead of spin (OMP_WAIT_POLICY=PASSIVE) helped as much under contention but cost 15% on a quiet machine. So `auto`
takes the cores this process may use that are idle as the stage starts.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import psutil
import torch

from plugen_core.io import PlugenInputError

SAMPLE_S = 0.25  # how long `auto` watches the cores


def cores_allowed() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a container's --cpus)."""
    cores = len(os.sched_getaffinity(0))
    quota = Path("/sys/fs/cgroup/cpu.max")
    if quota.is_file():
        limit, period = quota.read_text().split()
        if limit != "max":
            cores = min(cores, max(1, math.floor(int(limit) / int(period))))
    return cores


def cores_idle(cores: set[int]) -> float:
    """How many of `cores` sat idle over the last SAMPLE_S seconds, summed (0.5 = half of one core)."""
    busy = psutil.cpu_percent(interval=SAMPLE_S, percpu=True)
    return sum(100 - busy[c] for c in cores if c < len(busy)) / 100


def resolve(setting: int | str = "auto") -> int:
    """Threads for `setting`: a positive count, or `auto` = the allowed cores idle now (at least 1). An
    OMP_NUM_THREADS in the environment wins over `auto`: whatever runs stages side by side (the Prefect sweep, a
    user's `dvc queue`) sets it to its share of the cores."""
    if setting == "auto":
        if os.environ.get("OMP_NUM_THREADS", "").isdigit():  # capped: more threads than cores only contend
            return max(1, min(cores_allowed(), int(os.environ["OMP_NUM_THREADS"])))
        idle = cores_idle(os.sched_getaffinity(0))
        return max(1, min(cores_allowed(), round(idle)))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise PlugenInputError(f"params: threads must be 'auto' or a positive whole number, got {setting!r}")
    return setting


def configure(setting: int | str = "auto") -> int:
    """Set torch's intra-op threads for this process and say how many."""
    threads = resolve(setting)
    torch.set_num_threads(threads)
    print(f"[threads] {threads} intra-op thread(s) ({setting}; {cores_allowed()} core(s) allowed)", flush=True)
    return threads
