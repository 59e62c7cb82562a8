"""params.yaml is checked before any work: an unknown, missing, mistyped or out-of-range flow, labeller or judge
setting and an unsafe experiment or dataset name are refused, naming the key (with the closest known one for a typo)."""
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
