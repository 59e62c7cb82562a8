"""A killed training resumes from its last finished epoch and ends exactly where an uninterrupted run ends."""
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core import flow, resume
from plugen_core.backbones.gan import DCGAN
from plugen_core.backbones.molecule_vae import SelfiesVAE, alphabet_of
from plugen_core.backbones.vae import ConvVAE
from plugen_core.io import seed_everything
from plugen_core.judge import Judge
from plugen_core.schema import Schema
from tests.conftest import REPO

SCHEMA = Schema.from_spec([{"name": "big", "kind": "binary"}, {"name": "shade", "kind": "continuous"}], pd.DataFrame({"big": [0, 1], "shade": [0.0, 1.0]}))
IMAGES = np.random.default_rng(0).integers(0, 256, size=(48, 16, 16, 3), dtype=np.uint8)
LABELS = pd.DataFrame({"big": np.arange(48) % 2, "shade": np.linspace(0, 1, 48)})
SMILES = np.array(["CCO", "c1ccccc1", "CC(=O)O", "CCN", "C1CCCCC1", "CCOC", "OCCO", "CC(C)C"] * 4)


def train_flow(epochs, state):
    generator = seed_everything(0)  # as a stage does: seed, build, train
    w = torch.randn(200, 6, generator=torch.Generator().manual_seed(1))
    context = torch.from_numpy(SCHEMA.encode(LABELS.iloc[np.arange(200) % 48].reset_index(drop=True)))
    context[100:] = float("nan")  # unlabelled rows too
    model = flow.PluGeN.create(SCHEMA, 6, context[:100].numpy(), 1.0, couplings=2, hidden=16, layers=2)
    history = flow.fit(model, w, context, epochs, 32, 0.003, 1.0, 0.9, 0.2, 1.0, generator, 0.5, 0.1, state=state)
    return model, history


def train_vae(epochs, state):
    generator = seed_everything(0)
    model = ConvVAE(latent_dim=4, image_size=16, channels=3, width=8)
    return model, model.fit(IMAGES, epochs, 16, 0.003, torch.device("cpu"), generator, state)


def train_gan(epochs, state):
    generator = seed_everything(0)
    model = DCGAN(latent_dim=4, image_size=16, channels=3, width=8, ema_decay=0.9)
    return model, model.fit(IMAGES, epochs, 16, 0.001, torch.device("cpu"), generator, state)


def train_molecule_vae(epochs, state):
    generator = seed_everything(0)
    alphabet, longest = alphabet_of(SMILES)
    model = SelfiesVAE(alphabet=alphabet, max_length=longest, latent_dim=4, embedding=4, hidden=16)
    return model, model.fit(SMILES, epochs, 8, 0.003, torch.device("cpu"), generator, state)


def train_judge(epochs, state):
    generator = seed_everything(0)
    model = Judge(SCHEMA, input_shape=IMAGES.shape[1:], width=8)
    return model, model.fit(IMAGES, LABELS, epochs, 16, 0.003, 0.5, torch.device("cpu"), generator, state)


class Killed(Exception):
    pass


class KilledAfter(resume.TrainingState):
    """Saves like the real thing, then dies once `epoch` is saved (as a kill between two epochs would)."""

    def __init__(self, epoch: int):
        super().__init__("test@x", {"a": 1}, [])
        self.kill_at = epoch

    def _save(self, epoch, *args):
        super()._save(epoch, *args)
        if epoch == self.kill_at:
            raise Killed


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_clock(history):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in history]


@pytest.mark.parametrize("trainer", [train_flow, train_vae, train_gan, train_molecule_vae, train_judge])
def test_a_training_killed_between_epochs_resumes_and_ends_where_an_uninterrupted_one_does(trainer, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    straight, straight_history = trainer(4, None)
    with pytest.raises(Killed):
        trainer(4, KilledAfter(2))
    resumed, resumed_history = trainer(4, resume.TrainingState("test@x", {"a": 1}, []))
    assert "continuing at epoch 3" in capsys.readouterr().out
    assert same_state(resumed, straight)
    assert without_clock(resumed_history) == without_clock(straight_history)

    untouched, _ = trainer(1, None)  # the check above can fail: one epoch fewer is another model
    assert not same_state(untouched, straight)


def test_a_state_saved_for_other_settings_is_ignored(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Killed):
        train_flow(4, KilledAfter(2))
    other = resume.TrainingState("test@x", {"a": 2}, [])
    _, history = train_flow(4, other)
    assert "starting over" in capsys.readouterr().out
    assert len(history) == 4
    other.clear()
    assert not (tmp_path / ".resume" / "test@x").exists()


KILLABLE = textwrap.dedent(
    """
    import sys, time, torch
    from plugen_core import resume
    from tests.test_resume import train_flow
    state = resume.TrainingState("killable@x", {"a": 1}, [])
    model, history = train_flow(int(sys.argv[1]), state)
    torch.save(model.state_dict(), "final.pt")
    """
)


def test_kill_9_mid_training_then_rerun_redoes_at_most_one_epoch(tmp_path, monkeypatch):
    """A real SIGKILL at an arbitrary point of epoch 5 of 12 (the process is slowed by no sleep: it dies mid-work)."""
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-u", "-c", KILLABLE, "12"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:
        if "epoch 5/12" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    rerun = subprocess.run([sys.executable, "-u", "-c", KILLABLE, "12"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    done = int(re.search(r"(\d+) epoch\(s\) done", rerun.stdout).group(1))
    assert done >= 4, rerun.stdout  # epochs 1-4 were saved before the kill; at most epoch 5 is redone
    assert "epoch 1/12" not in rerun.stdout
    straight, _ = train_flow(12, None)
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in straight.state_dict().items())
