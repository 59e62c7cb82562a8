"""params.yaml is checked before any work: an unknown, missing, mistyped or out-of-range setting (flow, labeller, judge,
dataset, evaluate, tracking, a top-level section) and an unsafe experiment or dataset name are refused, naming the key
(with the closest known one for a typo)."""
import copy
import re
from pathlib import Path

import pytest
import yaml

from plugen_core import config
from plugen_core.io import PlugenInputError

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_the_default_experiments_pass():
    for name in PARAMS["experiments"]:
        assert config.experiment(PARAMS, name)["flow"]["epochs"] >= 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p["flow"].update(epoch=3), "flow (with experiments.shapes-vae.flow).epoch is not a setting; did you mean 'epochs'?"),
        (lambda p: p["experiments"]["shapes-vae"]["flow"].update(epochs=-1), ".epochs must be a whole number >= 0, got -1"),
        (lambda p: p["experiments"]["shapes-vae"]["flow"].update(batch_size="256x"), ".batch_size must be a whole number >= 1, got '256x'"),
        (lambda p: p["experiments"]["shapes-vae"]["flow"].update(lr=0), ".lr must be a number > 0, got 0"),
        (lambda p: p["flow"].update(use_unlabelled="yes"), ".use_unlabelled must be true or false, got 'yes'"),
        (lambda p: p["flow"].update(coupling="spline"), ".coupling must be one of ['additive', 'affine'], got 'spline'"),
        (lambda p: p["flow"].update(labelled_share=1.0), ".labelled_share must be a number in [0, 1), got 1.0"),
        (lambda p: p["flow"].pop("sigma0"), "flow (with experiments.shapes-vae.flow).sigma0 is missing"),
    ],
)
def test_a_bad_flow_setting_is_refused_naming_it(edit, message):
    params = copy.deepcopy(PARAMS)
    edit(params)
    with pytest.raises(PlugenInputError) as e:
        config.experiment(params, "shapes-vae")
    assert message in str(e.value)


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "x..y", ""])
def test_unsafe_names_are_refused_before_any_path_is_made(name):
    params = copy.deepcopy(PARAMS)
    params["experiments"][name] = params["experiments"]["shapes-vae"]
    params["datasets"][name] = params["datasets"]["shapes"]
    for resolve in (config.experiment, config.dataset):
        with pytest.raises(PlugenInputError, match="it names folders"):
            resolve(params, name)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(epoch=3), "experiments.shapes-gan.labeller.epoch is not a setting; did you mean 'epochs'?"),
        (lambda p: p.update(threshold=1.5), "experiments.shapes-gan.labeller.threshold must be a number in [0, 1], got 1.5"),
        (lambda p: p.update(count=0), "labeller.count must be null (every training sample) or a whole number >= 1, got 0"),
        (lambda p: p.pop("lr"), "experiments.shapes-gan.labeller.lr is missing"),
    ],
)
def test_a_bad_labeller_setting_is_refused_naming_it(edit, message):
    params = copy.deepcopy(PARAMS)
    edit(params["experiments"]["shapes-gan"]["labeller"])
    with pytest.raises(PlugenInputError) as e:
        config.experiment(params, "shapes-gan")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(epocs=3), "judge.epocs is not a setting; did you mean 'epochs'?"),
        (lambda p: p.update(augment=2), "judge.augment must be a number in [0, 1], got 2"),
        (lambda p: p.update(epochs=0), "judge.epochs must be a whole number >= 1, got 0"),
    ],
)
def test_a_bad_judge_setting_stops_train_judge_before_it_reads_data(edit, message, tmp_path, monkeypatch, capsys):
    from plugen_core.io import run_stage
    from plugen_core.stages import train_judge

    params = copy.deepcopy(PARAMS)
    params["datasets"]["shapes"]["pretrained_judge"] = None  # the judge is trained here, so its settings matter
    edit(params["judge"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)  # no data/ here: a check after reading would fail on the missing file instead
    monkeypatch.setattr("sys.argv", ["train_judge", "--dataset", "shapes"])
    with pytest.raises(SystemExit) as e:
        run_stage(train_judge.main)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_no_param_is_named_as_dvc_run_cache_ignores():
    """DVC's run cache hashes a stage's params without keys named `size` or `nfiles` (its own file metadata): a stage
    whose only change was such a param would be restored from an earlier run's outputs. Measured: `dvc exp run -S
    datasets.shapes.labelled.size=300 data@shapes` was 'cached' from the run at 100."""
    from dvc.utils import dict_sha256

    assert dict_sha256({"labelled": {"size": 1}}, exclude=["size"]) == dict_sha256({"labelled": {"size": 2}}, exclude=["size"])  # still so

    def keys(node) -> set:
        if isinstance(node, dict):
            return set(node).union(*(keys(v) for v in node.values()))
        return set().union(*(keys(v) for v in node)) if isinstance(node, list) else set()

    for path in ("params.yaml", "zoo/params.yaml"):
        assert not keys(yaml.safe_load((Path(__file__).resolve().parents[1] / path).read_text())) & {"size", "nfiles"}, path


def test_a_labelled_size_is_refused_naming_its_new_name():
    from plugen_core.datasets.labels import check_rules

    with pytest.raises(PlugenInputError, match=re.escape("datasets.shapes.labelled: unknown key(s) ['size'] (known: count, held_out, correlated); `size` is now `count`")):
        check_rules({"size": 100, "held_out": []}, [], "datasets.shapes.labelled")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(flwo={}), "params: flwo is not a setting; did you mean 'flow'?"),
        (lambda p: p.update(seed="abc"), "params: seed must be a whole number >= 0, got 'abc'"),
        (lambda p: p.update(device="gpu"), "params: device must be auto, cpu, cuda or cuda:<n>, got 'gpu'"),
        (lambda p: p["tracking"].update(url="http://x"), "params: tracking.url is not a setting; did you mean 'uri'?"),
        (lambda p: p["tracking"].update(optional="no"), "params: tracking.optional must be true or false, got 'no'"),
        (lambda p: p["flow"].update(sigma0=float("inf")), ".sigma0 must be a number > 0, got inf"),
        (lambda p: p["datasets"]["shapes"].update(n_trian=300), "datasets.shapes.n_trian is not a setting; did you mean 'n_train'?"),
        (lambda p: p["datasets"]["shapes"].update(n_train="300"), "datasets.shapes.n_train must be a whole number >= 1, got '300'"),
        (lambda p: p["datasets"]["shapes"].update(size_range=[10, 5]), "datasets.shapes.size_range must be [low, high] with low < high, got [10, 5]"),
        (lambda p: p["datasets"]["shapes"].update(image_size=0), "datasets.shapes.image_size must be a whole number >= 8, got 0"),
        (lambda p: p["datasets"]["shapes"].pop("n_test"), "datasets.shapes.n_test is missing"),
        (lambda p: p["datasets"]["moses"].update(properties="logp"), "datasets.moses.properties must be a list of names, or null, got 'logp'"),
    ],
)
def test_a_bad_dataset_top_level_or_tracking_setting_is_refused_naming_it(edit, message):
    params = copy.deepcopy(PARAMS)
    edit(params)
    with pytest.raises(PlugenInputError) as e:
        config.experiment(params, "shapes-vae" if "moses" not in message else "moses-vae")
    assert message in str(e.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"source": "latents", "input": "x", "latnets": "w.npy"}, "datasets.d.latnets is not a setting; did you mean 'latents'?"),
        ({"source": "latents", "input": "x", "test_fraction": -0.5}, "datasets.d.test_fraction must be a number in [0, 1), got -0.5"),
        ({"source": "images", "input": "x", "image_size": 32, "crop": "middle"}, "datasets.d.crop must be one of ['center', 'none'], got 'middle'"),
        ({"source": "molecules", "input": "x", "invalid": "drop"}, "datasets.d.invalid must be one of ['refuse', 'skip'], got 'drop'"),
    ],
)
def test_a_bring_your_own_dataset_entry_is_checked_for_its_source(entry, message):
    with pytest.raises(PlugenInputError, match=re.escape(message)):
        config.dataset({"datasets": {"d": entry}}, "d")


def test_the_zoo_params_pass():
    zoo = yaml.safe_load((Path(__file__).resolve().parents[1] / "zoo/params.yaml").read_text())
    for name in zoo["datasets"]:
        assert config.dataset(zoo, name)["name"] == name


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"held_out": {"shape": "circle"}}, "labelled.held_out must be a list of mappings, got {'shape': 'circle'}"),
        ({"held_out": [], "correlated": [{"a": "hollow", "b": "light_background"}]}, "labelled.correlated must be a list of mappings, each with ['a', 'b', 'strength']"),
    ],
)
def test_malformed_held_out_or_correlated_rules_are_refused(rules, message):
    from plugen_core.datasets.labels import check_rules

    with pytest.raises(PlugenInputError, match=re.escape(message)):
        check_rules(rules, [{"name": "shape", "kind": "categorical", "classes": ["circle"]}], "datasets.d.labelled")


def test_an_unknown_or_infinite_evaluate_setting_is_refused():
    from plugen_core.evaluation import check_settings

    ev = config.experiment(PARAMS, "moses-vae")["evaluate"]
    check_settings(ev)
    with pytest.raises(PlugenInputError, match=re.escape("evaluate.temprature is not a setting; did you mean 'temperature'?")):
        check_settings(ev | {"temprature": 0.1})
    with pytest.raises(PlugenInputError, match=re.escape("evaluate.temperature must be a finite number, got inf")):
        check_settings(ev | {"temperature": float("inf")})


def test_an_id_or_split_column_is_not_taken_for_an_attribute():
    import pandas as pd

    from plugen_core.datasets.labels import infer_spec

    table = pd.DataFrame({"id": [7, 8, 9], "smiling": [1, -1, 1]})
    with pytest.raises(PlugenInputError, match=re.escape("labels.csv: column(s) ['id'] cannot be attributes")):
        infer_spec(table, list(table.columns), "labels.csv")
    assert infer_spec(table, ["smiling"], "labels.csv")[1] == [{"name": "smiling", "kind": "binary"}]
