"""Resumable training: a killed stage continues from its last finished epoch instead of starting over.

After every epoch the training loop's whole state (the model, optimisers and schedules, every random generator and
the history so far) is written atomically to `.resume/<stage>@<name>/state.pt`, outside DVC's outputs. The state is
keyed by the stage's settings and the digests of its inputs: after a change of either it is ignored and overwritten.
A rerun restores it and runs the remaining epochs, so it ends where an uninterrupted run ends; the folder is removed
once the stage has written its outputs.

Written here rather than with Lightning Fabric: Fabric saves and loads the same state dicts, but it would own device
placement and the loops of five trainers for what is one atomic `torch.save` per epoch.
"""
from __future__ import annotations

import functools
import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from plugen_core.io import file_digest, load_checkpoint, save_checkpoint

ROOT = Path(".resume")


class TrainingState:
    """Where one stage's training keeps its progress (`name`: e.g. `train_flow@shapes-vae`)."""

    def __init__(self, name: str, settings: dict, inputs: Sequence[str | Path]):
        self.folder = ROOT / name
        self.path = self.folder / "state.pt"
        self.settings, self.inputs = settings, inputs

    @functools.cached_property
    def key(self) -> str:
        """The settings and the inputs' digests: computed when a loop first runs (a stage that trains nothing, e.g.
        on a shipped checkpoint, never hashes its data)."""
        key = hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode())
        for path in self.inputs:
            key.update(file_digest(path, "md5").encode())
        return key.hexdigest()

    def epochs(self, total: int, history: list[dict], generator: torch.Generator, **stateful) -> Iterator[int]:
        """The epochs still to run. A saved state of the same key is restored first (into `stateful`, the random
        generators and `history`); after each epoch the loop's state is saved before the next one starts. `stateful`:
        objects with state_dict/load_state_dict (None entries are skipped)."""
        stateful = {k: v for k, v in stateful.items() if v is not None}
        start = self._restore(history, generator, stateful)
        return self._run(start, total, history, generator, stateful)

    def clear(self) -> None:
        """Drop the saved state: the stage's outputs now hold its result."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, start: int, total: int, history: list[dict], generator: torch.Generator, stateful: dict) -> Iterator[int]:
        for epoch in range(start, total):
            yield epoch
            self._save(epoch + 1, history, generator, stateful)

    def _save(self, epoch: int, history: list[dict], generator: torch.Generator, stateful: dict) -> None:
        state = {
            "key": self.key,
            "epoch": epoch,
            "history": history,
            "states": {name: obj.state_dict() for name, obj in stateful.items()},
            "rng": random_states(generator),
        }
        save_checkpoint(state, self.path)

    def _restore(self, history: list[dict], generator: torch.Generator, stateful: dict) -> int:
        if not self.path.is_file():
            return 0
        state = load_checkpoint(self.path, ("key", "epoch", "history", "states", "rng"))
        if state["key"] != self.key or set(state["states"]) != set(stateful):
            print(f"[resume] {self.path} was saved for other settings or inputs: starting over", flush=True)
            return 0
        for name, obj in stateful.items():
            obj.load_state_dict(state["states"][name])
        set_random_states(state["rng"], generator)
        history[:] = state["history"]
        print(f"[resume] resuming from {self.path}: {state['epoch']} epoch(s) done, continuing at epoch {state['epoch'] + 1}", flush=True)
        return state["epoch"]


def epochs(state: TrainingState | None, total: int, history: list[dict], generator: torch.Generator, **stateful) -> Iterator[int]:
    """`state.epochs(...)`, or every epoch when the caller keeps no state (a library call outside a stage)."""
    return state.epochs(total, history, generator, **stateful) if state else iter(range(total))


def random_states(generator: torch.Generator) -> dict:
    """Every generator a training epoch draws from, as tensors and plain values (loadable with weights_only)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss},
        "python": random.getstate(),
    }


def set_random_states(states: dict, generator: torch.Generator) -> None:
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["python"])
