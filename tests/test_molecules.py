"""Molecules: RDKit's properties and judge, the SELFIES VAE, the molecule datasets, held-out regions and the molecule
scores, each on a case whose answer is known."""
import os
import signal
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from plugen_core import chemistry
from plugen_core.backbones.molecule_vae import SelfiesVAE, alphabet_of
from plugen_core.datasets import molecules
from plugen_core.datasets.labels import check_rules, matches
from plugen_core.io import PlugenInputError
from plugen_core.molecule_evaluation import quality, score_region, score_region_reconstructions, score_targets
from plugen_core.schema import Attribute

MOLECULES = np.array(["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "OC1CCCCC1", "CC(C)Cc1ccc(C)cc1", "O=C(O)CCl", "CCOC(=O)C=C"])


def test_properties_are_rdkit_s_and_an_invalid_smiles_has_none():
    props = chemistry.properties(["CCO", "not a molecule", ""])
    assert props.loc[0, "mw"] == pytest.approx(46.07, abs=0.01)
    assert props.loc[0, "logp"] == pytest.approx(-0.0014, abs=0.01)
    assert props.iloc[1:].isna().all().all()
    assert list(chemistry.canonical(["OCC", "C1=CC=CC=C1", "xyz"])) == ["CCO", "c1ccccc1", ""]


def test_work_split_over_processes_gives_what_one_process_gives(monkeypatch):
    smiles = list(MOLECULES) * 20 + ["not a molecule"]
    answers = {}
    for workers in (1, 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda: workers)
        answers[workers] = chemistry.properties(smiles), chemistry.canonical(smiles), chemistry.selfies_of(smiles[:-1])
        with pytest.raises(PlugenInputError, match=r"row 150: SMILES 'C\(' cannot be written as SELFIES"):  # the row of the whole set
            chemistry.selfies_of(smiles[:150] + ["C("] + smiles[150:])
    pd.testing.assert_frame_equal(answers[1][0], answers[2][0])
    assert answers[2][0]["mw"].isna().sum() == 1 and list(answers[1][1]) == list(answers[2][1]) and answers[1][2] == answers[2][2]


def test_work_asked_for_from_another_thread_stays_in_this_process(monkeypatch):
    """A server's request thread must not fork (a lock held by another thread would be copied into the workers)."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    items, pids = list(range(200)), {}
    thread = threading.Thread(target=lambda: pids.update(request=set(chemistry.in_parallel(_pid_of_each, items))))
    thread.start()
    thread.join()
    assert pids["request"] == {os.getpid()}
    assert os.getpid() not in set(chemistry.in_parallel(_pid_of_each, items))  # the main thread does split the work


def test_a_pool_whose_worker_died_is_replaced(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    items = list(range(200))
    worker = next(iter(set(chemistry.in_parallel(_pid_of_each, items))))
    os.kill(worker, signal.SIGKILL)  # as the kernel's out-of-memory killer would
    assert len(chemistry.in_parallel(_pid_of_each, items)) == 200 and worker not in chemistry.in_parallel(_pid_of_each, items)


def _pid_of_each(items: list) -> list[int]:
    return [os.getpid()] * len(items)


def test_a_molecule_is_encoded_the_same_however_it_is_written():
    assert chemistry.selfies_of(["O=C(NC)c1ccccc1OCC", "CCO ethanol"]) == chemistry.selfies_of(["CNC(=O)c1ccccc1OCC", "OCC"])


def test_tanimoto_is_one_for_the_same_molecule_and_lower_for_another():
    sims = chemistry.tanimoto(["CCO", "c1ccccc1O", "CCO"], ["OCC", "c1ccccc1N", ""])
    assert sims[0] == 1.0 and 0 < sims[1] < 1 and sims[2] == 0.0


def test_selfies_vae_reads_back_what_it_writes_and_names_a_molecule_it_cannot_read():
    alphabet, longest = alphabet_of(MOLECULES)
    model = SelfiesVAE(alphabet, longest, latent_dim=8)
    assert list(model.postprocess(model.preprocess(MOLECULES))) == list(chemistry.canonical(MOLECULES))
    with pytest.raises(PlugenInputError, match=r"row 1: SMILES 'CCBr' has token \[Br\]"):
        model.preprocess(np.array(["CCO", "CCBr"]))
    with pytest.raises(PlugenInputError, match="row 0: .* tokens long"):
        model.preprocess(np.array(["C" * (longest + 1)]))
    with pytest.raises(PlugenInputError, match="row 100: SMILES 'CCBr'"):  # the row of the whole set, not of a batch
        model.encode_data(np.array(["CCO"] * 100 + ["CCBr"]))


def test_selfies_vae_learns_to_reconstruct_and_an_untrained_one_does_not():
    torch.manual_seed(0)
    alphabet, longest = alphabet_of(MOLECULES)
    model = SelfiesVAE(alphabet, longest, latent_dim=8, hidden=64, beta=0.01)
    exact = lambda: (model.decode_data(model.encode_data(MOLECULES)) == chemistry.canonical(MOLECULES)).mean()  # noqa: E731
    assert exact() < 0.5  # the negative control
    model.fit(MOLECULES, 150, 8, 0.01, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert exact() == 1.0
    sampled = model.postprocess(model.generate(torch.randn(4, 8), temperature=1.0, generator=torch.Generator().manual_seed(0)))
    assert sampled.shape == (4,) and sampled.dtype.kind == "U"


def test_a_molecule_table_names_an_invalid_smiles_by_row_and_can_skip_it(tmp_path, capsys):
    path = tmp_path / "mols.csv"
    pd.DataFrame({"SMILES": ["CCO", "C1CC", "c1ccccc1", "CCN"]}).to_csv(path, index=False)
    entry = {"name": "mine", "input": str(path), "properties": ["logp", "mw"]}
    with pytest.raises(PlugenInputError, match=r"mols.csv: 1 invalid SMILES \(row 1: 'C1CC'\)"):
        molecules.prepare_table(entry, np.random.default_rng(0))
    samples, labels, spec = molecules.prepare_table(entry | {"invalid": "skip", "test_fraction": 0.25}, np.random.default_rng(0))
    assert "skipping 1 invalid SMILES of 4: row 1: 'C1CC'" in capsys.readouterr().out
    assert list(samples) == ["CCO", "c1ccccc1", "CCN"] and list(labels.columns) == ["id", "split", "logp", "mw"]
    assert [a["name"] for a in spec] == ["logp", "mw"] and spec[1]["low"] == pytest.approx(labels["mw"].min())
    with pytest.raises(PlugenInputError, match=r"properties: \['solubility'\] not computable"):
        molecules.prepare_table(entry | {"properties": ["solubility"], "invalid": "skip"}, np.random.default_rng(0))


def test_moses_is_read_from_the_wheel_canonical_and_labelled_and_fcd_tells_it_from_alkanes():
    samples, labels, spec = molecules.prepare_moses({"name": "moses", "n_train": 30, "n_test": 10}, np.random.default_rng(0))
    assert samples.shape == (40,) and (chemistry.canonical(samples) == samples).all()
    assert (labels["split"] == "test").sum() == 10 and labels[list(chemistry.PROPERTIES)].notna().all().all()
    assert 250 <= labels["mw"].min() and labels["mw"].max() <= 350  # MOSES's weight filter
    scores = chemistry.fcd(samples, {"same": samples, "alkanes": np.array(["C" * k for k in range(2, 42)]), "none": np.array(["", "x"])})
    assert abs(scores["same"]) < 1e-3 and scores["alkanes"] > 10 and np.isnan(scores["none"])


def test_a_held_out_region_is_an_interval_per_continuous_attribute():
    df = pd.DataFrame({"logp": [1.0, 3.5, 3.5, np.nan], "mw": [260.0, 280.0, 300.0, 270.0]})
    assert list(matches(df, {"logp": [3.0, 4.0], "mw": [250.0, 290.0]})) == [False, True, False, False]
    spec = [{"name": "logp", "kind": "continuous", "low": 0.0, "high": 5.0}]
    check_rules({"held_out": [{"logp": [3.0, 4.0]}]}, spec, "w")
    with pytest.raises(PlugenInputError, match=r"'logp' is continuous; hold out an interval \[low, high\]"):
        check_rules({"held_out": [{"logp": 3.0}]}, spec, "w")


def test_molecule_scores_on_known_answers():
    smiles = np.array(["CCO", "CCO", "", "c1ccccc1"])
    q = quality(smiles, {"CCO"}, "g")
    assert q == pytest.approx({"g.validity": 0.75, "g.uniqueness": 2 / 3, "g.novelty": 0.5, "g.internal_diversity": q["g.internal_diversity"], "g.heavy_atoms": 4.0})
    pred = pd.DataFrame({"logp": [1.1, 0.9, np.nan, 3.0, 2.0, 2.8]})
    out = score_targets(pred, np.array(["C"] * 2 + [""] + ["C"] * 3), "logp", [1.0, 3.0], 3, Attribute("logp", "continuous", low=0.0, high=5.0), 0.1)
    assert out["target.logp:1.mean"] == pytest.approx(1.0) and out["target.logp:1.validity"] == pytest.approx(2 / 3)
    assert out["target.logp:3.mean_error"] == pytest.approx(abs(7.8 / 3 - 3)) and out["target.logp:3.within_tolerance"] == pytest.approx(2 / 3)
    region = [{"logp": [3.0, 4.0]}]
    got = score_region(pd.DataFrame({"logp": [3.5, 3.2, 1.0, np.nan]}), pd.DataFrame({"logp": [3.5, 1.0, 1.0, 1.0]}), region)
    assert (got["generation.unseen.joint"], got["generation.unseen.base_rate"], got["generation.unseen.lift"]) == pytest.approx((0.5, 0.25, 2.0))
    assert got["generation.unseen.logp:3..4.joint"] == 0.5  # a name MLflow takes: no brackets or commas
    two = region + [{"mw": [250.0, 300.0]}]  # each region scored on the rows generated for it
    got = score_region(pd.DataFrame({"logp": [3.5, 3.2, 1.0, 1.0], "mw": [100.0, 100.0, 260.0, 270.0]}), pd.DataFrame({"logp": [3.5], "mw": [260.0]}), two)
    assert (got["generation.unseen.logp:3..4.joint"], got["generation.unseen.mw:250..300.joint"], got["generation.unseen.lift"]) == (1.0, 1.0, 1.0)
    rebuilt = score_region_reconstructions([pd.DataFrame({"logp": [3.5, 3.9, 1.0, np.nan]})], region, 0.25)
    assert (rebuilt["reconstructions.unseen.joint"], rebuilt["reconstructions.unseen.lift"], rebuilt["reconstructions.unseen.logp:3..4.n"]) == pytest.approx((0.5, 2.0, 4))


@pytest.fixture(scope="module")
def moses_repo(tmp_path_factory):
    """The molecule experiment through a real `dvc repro`, tiny: a SELFIES VAE trained here for one epoch on a few
    hundred MOSES molecules, the RDKit judge, MLflow in the project's own SQLite store."""
    import yaml

    from tests.conftest import copy_repo, dvc

    repo = copy_repo(tmp_path_factory.mktemp("moses") / "repo", experiments=("moses-vae",))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["moses"] |= {"n_train": 400, "n_test": 100}
    params["experiments"]["moses-vae"]["backbone"] = {"kind": "selfies-vae", "pretrained": None, "latent_dim": 16, "epochs": 2, "batch_size": 64, "lr": 0.002}
    params["experiments"]["moses-vae"]["evaluate"] |= {"n_fid": 100, "n_per_target": 10}
    params["flow"] |= {"epochs": 3}
    params["evaluate"] |= {"n_generation": 50, "n_manipulation": 20}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro")
    return repo


@pytest.mark.slow
def test_the_molecule_experiment_scores_with_rdkit_draws_and_registers_a_smiles_model(moses_repo):
    import json

    import mlflow

    m = json.loads((moses_repo / "metrics/moses-vae/metrics.json").read_text())
    for key in ("backbone.validity", "generation.validity", "generation.uniqueness", "generation.novelty", "generation.seen.continuous_mae",
                "target.logp:1.mean_error", "target.logp.mae_fraction", "generation.unseen.joint", "generation.unseen.base_rate",
                "manipulation.success", "manipulation.tanimoto_median", "classifier.continuous_mae", "fcd.plugen_samples", "fcd.ratio"):
        assert np.isfinite(m[key]), key
    assert "reconstructions.unseen.joint" in m  # NaN where no tiny test molecule falls in the region
    assert m["judge.space"] == "rdkit" and m["generation.validity"] > 0.5  # SELFIES: almost every token string is a molecule
    for picture in ("generation_grid.png", "manipulation_grid.png", "property_histograms.png", "flow_curves.png"):
        assert (moses_repo / "plots/moses-vae" / picture).stat().st_size > 1000
    table = pd.read_parquet(moses_repo / "aligned/moses-vae/table.parquet")
    labelled = table[table["labelled"]]
    assert not matches(labelled, {"logp": [3.25, 4.75], "mw": [250.0, 290.0]}).any()  # the held-out region
    mlflow.set_tracking_uri(f"sqlite:///{moses_repo / 'mlflow/mlflow.db'}")
    out = mlflow.pyfunc.load_model("models:/plugen-moses-vae@champion").predict(pd.DataFrame({"logp": [2.0, 3.0], "mw": [300.0, None]}), params={"seed": 0})
    assert list(out.columns) == ["logp", "qed", "sas", "mw", "smiles"] and out["smiles"].map(lambda s: isinstance(s, str)).all()


@pytest.mark.slow
def test_the_molecule_baselines_are_scored_by_rdkit_on_the_plugin_s_requests(moses_repo):
    import json

    from tests.conftest import dvc, set_params

    set_params(moses_repo / "params.yaml", {"baselines.conditional_flow.epochs": 5, "baselines.lace.steps": 10, "baselines.rejection.max_draws": 1000})
    dvc(moses_repo, "repro", "reports/dvc.yaml:baselines@moses-vae")
    scores = json.loads((moses_repo / "metrics/moses-vae/baselines.json").read_text())
    plugen = json.loads((moses_repo / "metrics/moses-vae/metrics.json").read_text())
    for method in ("interfacegan", "conditional_flow", "lace", "rejection"):
        for key in ("generation.validity", "generation.seen.continuous_mae", "target.logp:1.mean", "target.mae_fraction", "generation.unseen.joint",
                    "fcd", "time.fit_s", "time.generate_1000_s"):
            assert np.isfinite(scores[f"baselines.{method}.{key}"]), (method, key)
        # the backbone's base rate in the held-out region is one, measured once for every method and the plugin
        assert scores[f"baselines.{method}.generation.unseen.base_rate"] == plugen["generation.unseen.base_rate"]
        edits = f"baselines.{method}.manipulation.tanimoto_median" in scores
        assert edits == (method != "rejection"), method  # rejection sampling only generates


def test_the_rdkit_judge_is_stored_as_its_schema_and_refuses_a_property_rdkit_does_not_compute(tmp_path):
    from plugen_core.judge import PropertyJudge
    from plugen_core.schema import Schema

    schema = Schema([Attribute("logp", "continuous", low=-1.0, high=5.0), Attribute("mw", "continuous", low=200.0, high=400.0)])
    PropertyJudge(schema).save(tmp_path / "judge.pt")
    judge = PropertyJudge.load(tmp_path / "judge.pt")
    assert list(judge.predict(["CCO"]).columns) == ["logp", "mw"]
    PropertyJudge(Schema([Attribute("solubility", "continuous", low=0.0, high=1.0)])).save(tmp_path / "bad.pt")
    with pytest.raises(PlugenInputError, match=r"RDKit computes no property \['solubility'\]"):
        PropertyJudge.load(tmp_path / "bad.pt")


def test_an_edit_step_that_would_leave_the_range_goes_the_other_way():
    from plugen_core.stages.evaluate_molecules import stepped

    moved = stepped(pd.Series([1.0, 4.5]), 1.0, Attribute("logp", "continuous", low=0.0, high=5.0))
    assert list(moved) == [2.0, 3.5]
