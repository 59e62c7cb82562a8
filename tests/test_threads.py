"""`threads: auto` takes the idle allowed cores, a runner's OMP_NUM_THREADS wins, a bad setting is refused."""
import os

import pytest

from plugen_core import threads
from plugen_core.io import PlugenInputError


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "cores_allowed", lambda: 2)


@pytest.mark.parametrize("busy, expected", [([3.0, 5.0], 2), ([100.0, 2.0], 1), ([100.0, 100.0], 1), ([60.0, 70.0], 1)])
def test_auto_takes_the_idle_cores(two_cores, monkeypatch, busy, expected):
    monkeypatch.setattr(threads.psutil, "cpu_percent", lambda interval, percpu: busy)
    assert threads.resolve("auto") == expected


def test_auto_ignores_cores_outside_the_affinity(two_cores, monkeypatch):
    monkeypatch.setattr(threads.psutil, "cpu_percent", lambda interval, percpu: [100.0, 100.0, 0.0, 0.0])
    assert threads.resolve("auto") == 1


def test_a_runners_share_wins_over_auto(two_cores, monkeypatch):
    monkeypatch.setattr(threads.psutil, "cpu_percent", lambda interval, percpu: [0.0, 0.0])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve("auto") == 1
    assert threads.resolve(2) == 2  # an explicit count is the user's
    monkeypatch.setenv("OMP_NUM_THREADS", "32")  # a runner that counted the host's cores, not this process's
    assert threads.resolve("auto") == 2


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_a_bad_setting_is_named(bad):
    with pytest.raises(PlugenInputError, match="threads must be 'auto' or a positive whole number"):
        threads.resolve(bad)


def test_configure_sets_torch(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.configure(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_allowed_cores_respect_the_affinity():
    assert 1 <= threads.cores_allowed() <= len(os.sched_getaffinity(0))
