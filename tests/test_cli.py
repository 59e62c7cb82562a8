"""`plugen generate`, `plugen edit` and `plugen classify` on a small trained shapes-vae plugin (and a moses-vae one):
the judge sees what was asked for (an untrained flow does not), and every bad input is one line, exit code 2, no file."""
import re
import shlex
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from plugen_core import chemistry, demo, io, tracking, usage
from plugen_core.cli import GRID_GAP, GRID_ZOOM, main
from plugen_core.flow import PluGeN
from tests.trained_plugin import (FLOW, REQUEST, joint_agreement, moses_plugin, shapes_judge, shapes_plugin, shared_moses_plugin,
                                  shared_shapes_plugin)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return shared_shapes_plugin(tmp_path_factory)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> Path:
    return shapes_plugin(tmp_path_factory.mktemp("untrained"), epochs=0, n=200)


@pytest.fixture(scope="module")
def judge():
    return shapes_judge()


@pytest.fixture
def plugen(monkeypatch, capsys):
    """The command in-process, run from a workspace: its exit code, stdout and stderr."""

    def run(workspace: Path, command: str) -> tuple[int, str, str]:
        monkeypatch.chdir(workspace)
        try:
            main(shlex.split(command))
            code = 0
        except SystemExit as exit:
            code = exit.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def cells(path: Path, n: int, size: int = 32) -> np.ndarray:
    """The samples of a grid written by `plugen generate`: every GRID_ZOOM-th pixel of each cell."""
    grid = np.asarray(Image.open(path).convert("RGB"))
    step, extent = size * GRID_ZOOM + GRID_GAP, size * GRID_ZOOM
    columns = (grid.shape[1] + GRID_GAP) // step
    tops_lefts = [((i // columns) * step, (i % columns) * step) for i in range(n)]
    return np.stack([grid[top : top + extent : GRID_ZOOM, left : left + extent : GRID_ZOOM] for top, left in tops_lefts])


GENERATE = "generate --experiment shapes-vae " + " ".join(f"--set {k}={v}" for k, v in REQUEST.items()) + " -n 16 --seed 0"


def test_generate_writes_a_grid_the_judge_reads_as_requested(plugen, shapes, untrained, judge, tmp_path):
    code, out, _ = plugen(shapes, f"{GENERATE} -o {tmp_path}/out.png --save-latents {tmp_path}/w.npy")
    assert code == 0 and "16 images" in out
    images = cells(tmp_path / "out.png", 16)
    assert joint_agreement(judge.predict(images), REQUEST) >= 0.8
    assert np.load(tmp_path / "w.npy").shape == (16, 32)
    # the negative control: an untrained flow ignores the request (chance for both at once: 1/6)
    code, _, _ = plugen(untrained, f"{GENERATE} -o {tmp_path}/control.png")
    assert code == 0 and joint_agreement(judge.predict(cells(tmp_path / "control.png", 16)), REQUEST) < 0.5
    # the same seed, the same grid; unset attributes are drawn from their marginals, so not every sample is alike
    plugen(shapes, f"{GENERATE} -o {tmp_path}/again.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(tmp_path / "out.png")))
    assert judge.predict(images)["shape"].nunique() > 1


def test_edit_moves_the_set_attribute_and_classify_reads_it(plugen, shapes, judge, tmp_path):
    plugen(shapes, f"generate --experiment shapes-vae --set colour=green -n 1 --seed 1 -o {tmp_path}/one.png --save-latents {tmp_path}/w.npy")
    source = cells(tmp_path / "one.png", 1)
    Image.fromarray(source[0]).resize((128, 128), Image.Resampling.NEAREST).save(tmp_path / "input.png")  # any size is read
    assert judge.predict(source)["colour"][0] == "green"

    code, out, _ = plugen(shapes, f"edit --experiment shapes-vae --input {tmp_path}/input.png --set colour=red -o {tmp_path}/red.png")
    assert code == 0 and "colour=red" in out
    assert judge.predict(cells(tmp_path / "red.png", 1))["colour"][0] == "red"
    code, _, _ = plugen(shapes, f"edit --experiment shapes-vae --latent {tmp_path}/w.npy --set colour=blue -o {tmp_path}/blue.png")
    assert code == 0 and judge.predict(cells(tmp_path / "blue.png", 1))["colour"][0] == "blue"

    code, out, _ = plugen(shapes, f"classify --experiment shapes-vae --input {tmp_path}/input.png -o {tmp_path}/read.csv")
    read = pd.read_csv(tmp_path / "read.csv")
    assert code == 0 and "p(colour=green)" in out
    assert read.loc[0, "colour"] == "green" and read.loc[0, "p(colour=green)"] > 0.5


BAD_INPUTS = {  # the command after `plugen` (E: the experiment) -> what its one line must say
    "unknown experiment": ("generate --experiment nope -o x.png", "experiment 'nope' is not listed"),
    "unknown attribute": ("generate E --set color=red -o x.png", "unknown attribute 'color'; did you mean 'colour'?"),
    "value outside the classes": ("generate E --set colour=purple -o x.png", "colour=purple: not a class of 'colour'"),
    "value outside the range": ("generate E --set size=50 -o x.png", "size=50: outside the range the plugin was trained on"),
    "not a number": ("generate E --set size=big -o x.png", "size=big: 'size' takes a number"),
    "binary value": ("generate E --set hollow=2 -o x.png", "hollow=2: 'hollow' is binary: 0 or 1"),
    "no value": ("generate E --set colour -o x.png", "expected attribute=value"),
    "set twice": ("generate E --set colour=red --set colour=blue -o x.png", "colour is set twice; set each attribute once"),
    "no samples": ("generate E -n 0 -o x.png", "argument -n: '0': a whole number from 1 to 1024"),
    "wrong output type": ("generate E -o x.csv", "x.csv: shapes-vae writes images as a .png file"),
    "no output": ("generate E -n 4", "name the output file with -o"),
    "unreadable image": ("edit E --input broken.png --set colour=red -o x.png", "broken.png: not a readable image"),
    "missing image": ("edit E --input absent.png --set colour=red -o x.png", "absent.png: image file not found"),
    "nothing to edit": ("edit E --input broken.png -o x.png", "nothing to edit"),
    "latents of another size": ("classify E --latent short.npy", "short.npy: expected floating latents of shape (N, 32)"),
    "a smiles for an image model": ("classify E --input CCO", "CCO: image file not found"),
    "a model not trained here": ("generate E --params ../params.yaml -o x.png", "models/shapes-vae/backbone.pt: experiment 'shapes-vae' has no"),
    "params not YAML": ("generate E --params bad.yaml -o x.png", "bad.yaml: not valid YAML (line 2, column 5: expected ',' or ']'"),
    "infinite temperature": ("generate E --temperature inf -o x.png", "argument --temperature: 'inf': a finite number >= 0"),
    "seed past 64 bits": ("generate E --seed 99999999999999999999999 -o x.png", "seed 99999999999999999999999: a whole number from 0 to"),
    "negative seed": ("generate E --seed -1 -o x.png", "seed -1: a whole number from 0 to 9223372036854775807"),
    "latents with NaN": ("edit E --latent nan.npy --set colour=red -o x.png", "nan.npy: row 1 (counting from 0) holds NaN or infinity"),
    "latents with inf": ("classify E --latent inf.npy -o x.csv", "inf.npy: row 2 (counting from 0) holds NaN or infinity"),
    "no latents to edit": ("edit E --latent empty.npy --set colour=red -o x.png", "empty.npy: holds no latents (shape (0, 32))"),
    "no latents to classify": ("classify E --latent empty.npy", "empty.npy: holds no latents"),
    "an image too large": ("classify E --input huge.png", "huge.png: image too large to read"),
    "output is a folder": ("generate E -o taken.png", "taken.png: is a folder; -o names the file to write"),
    "output in a missing folder": ("generate E -o nowhere/x.png", "nowhere/x.png: folder nowhere does not exist"),
    "output where nothing is written": ("generate E -o /proc/x.png", "/proc/x.png: cannot write in folder /proc"),
    "latents where nothing is written": ("generate E -o x.png --save-latents /proc/w.npy", "/proc/w.npy: cannot write in folder /proc"),
    "latents over the image": ("generate E -o x.png --save-latents ./x.png", "x.png: both -o and --save-latents would write it"),
    "read-out where nothing is written": ("classify E --latent inf.npy -o /proc/x.csv", "/proc/x.csv: cannot write in folder /proc"),
}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: PIL reads the size when it opens the file."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def latents_with(row: int, value: float) -> np.ndarray:
    latents = np.zeros((3, 32), np.float32)
    latents[row, 5] = value
    return latents


def write_bad_inputs(where: Path) -> None:
    """The files BAD_INPUTS names."""
    (where / "broken.png").write_bytes(b"not a png at all")
    (where / "huge.png").write_bytes(png_header(30_000, 30_000))  # 900 Mpixels: past PIL's guard against decompression bombs
    (where / "bad.yaml").write_text("experiments: [shapes-vae\nflow: {}\n")
    (where / "taken.png").mkdir(exist_ok=True)
    np.save(where / "short.npy", np.zeros((2, 8), np.float32))
    np.save(where / "empty.npy", np.zeros((0, 32), np.float32))
    np.save(where / "nan.npy", latents_with(1, np.nan))
    np.save(where / "inf.npy", latents_with(2, np.inf))


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_file(case, plugen, shapes):
    command, message = BAD_INPUTS[case]
    write_bad_inputs(shapes)
    where = shapes / "elsewhere" if "../params.yaml" in command else shapes  # a folder the pipeline never ran in
    where.mkdir(exist_ok=True)
    code, out, err = plugen(where, command.replace(" E ", " --experiment shapes-vae "))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert not list(where.glob("x.*")) and not list(where.glob(".x.*"))  # no output, nor a temporary file left behind


def copy_of_model(shapes: Path, to: Path) -> Path:
    """A workspace of its own with the shared one's params and models, to break."""
    shutil.copy(shapes / "params.yaml", to)
    shutil.copytree(shapes / "models", to / "models")
    return to / "models/shapes-vae/plugen.pt"


def test_a_plugin_of_another_backbone_is_named_with_both_sizes(plugen, shapes, tmp_path):
    plugin = copy_of_model(shapes, tmp_path)
    schema = PluGeN.load(plugin).schema
    PluGeN.create(schema, 16, np.zeros((0, schema.n_coords), np.float32), sigma=0.7, **FLOW).save(plugin)
    code, _, err = plugen(tmp_path, "generate --experiment shapes-vae -n 1 -o x.png")
    assert code == 2 and err.count("\n") == 1, err
    assert ("error: models/shapes-vae/plugen.pt reads latents of size 16 but models/shapes-vae/backbone.pt makes latents of size 32"
            in err)
    assert not (tmp_path / "x.png").exists()


def test_a_garbage_checkpoint_is_one_short_line(plugen, shapes, tmp_path):
    copy_of_model(shapes, tmp_path).write_bytes(b"\x80\x02garbage, not a checkpoint" * 20)
    code, _, err = plugen(tmp_path, "generate --experiment shapes-vae -o x.png")
    assert code == 2 and err.count("\n") == 1 and "plugen.pt: corrupt or unreadable checkpoint (UnpicklingError" in err, err
    assert not (tmp_path / "x.png").exists()


def test_an_uppercase_csv_is_written_as_csv(plugen, shapes, tmp_path):
    np.save(tmp_path / "w.npy", np.zeros((2, 32), np.float32))
    code, _, err = plugen(shapes, f"classify --experiment shapes-vae --latent {tmp_path}/w.npy -o {tmp_path}/read.CSV")
    assert code == 0, err
    assert (tmp_path / "read.CSV").read_text().startswith("shape,") and len(io.read_table(tmp_path / "read.CSV")) == 2


def test_files_written_together_appear_all_or_none(tmp_path):
    def fail(tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.write_together({tmp_path / "a.png": lambda tmp: tmp.write_bytes(b"a"), tmp_path / "b.npy": fail})
    assert list(tmp_path.iterdir()) == []  # nor a temporary file
    io.write_together({tmp_path / "a.png": lambda tmp: tmp.write_bytes(b"a"), tmp_path / "b.npy": lambda tmp: tmp.write_bytes(b"b")})
    assert (tmp_path / "a.png").read_bytes() == b"a" and (tmp_path / "b.npy").read_bytes() == b"b"


def test_the_demo_answers_a_seed_past_64_bits_with_400(shapes, monkeypatch):
    monkeypatch.chdir(shapes)
    client = TestClient(demo.create_app(demo.Models({"shapes-vae": lambda: usage.from_pipeline("shapes-vae")})))
    answer = client.post("/api/generate", json={"model": "shapes-vae", "n": 1, "seed": 2**70})
    assert answer.status_code == 400 and answer.json()["detail"] == f"seed {2**70}: a whole number from 0 to {2**63 - 1}"


def test_a_registered_model_without_a_store_is_named(plugen, shapes, tmp_path):
    (shapes / "tracking.yaml").write_text(f"tracking: {{uri: 'sqlite:///{tmp_path / 'mlflow.db'}'}}\n")
    code, _, err = plugen(shapes, "generate --model models:/plugen-nothing@champion --params tracking.yaml -o x.png")
    assert code == 2 and err.startswith("error: no MLflow store at sqlite:///") and err.count("\n") == 1
    assert not (shapes / "x.png").exists() and not (tmp_path / "mlflow.db").exists()  # nor an empty store made


@pytest.mark.slow
def test_the_registered_model_generates_for_empty_rows_and_feeds_the_command(plugen, shapes, judge, tmp_path):
    """The pyfunc model of the plugin: N rows that set nothing are N samples of the marginals (MLflow used to hand the
    model 0 rows), and `plugen generate --model` uses it as it uses the pipeline's files."""
    import mlflow

    from plugen_core.pyfunc_model import decode_images, log_and_register

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (shapes / "tracking.yaml").write_text(f"tracking: {{uri: '{store}'}}\n")
    experiment = tracking.experiment_id(tracking.connect(store), "shapes-vae", store)  # artifacts beside the store, not in ./mlruns
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    backbone_params = yaml.safe_load((shapes / "params.yaml").read_text())["experiments"]["shapes-vae"]["backbone"]
    models = shapes / "models/shapes-vae"
    version = log_and_register(run.info.run_id, models / "plugen.pt", models / "backbone.pt", backbone_params, "plugen-shapes-vae", {},
                               {"temperature": 0.5, "style_temperature": 1.0})
    model = mlflow.pyfunc.load_model(f"models:/plugen-shapes-vae/{version}")
    out = model.predict(pd.DataFrame([{}, {}, {}, {}]), params={"seed": 0})
    assert len(out) == 4 and out.drop(columns="image_png").notna().all().all() and decode_images(out).shape == (4, 32, 32, 3)
    asked = model.predict(pd.DataFrame({"colour": ["red", None]}), params={"seed": 0})
    assert list(asked["colour"])[0] == "red" and len(asked) == 2

    registered = GENERATE.replace("--experiment shapes-vae", f"--model models:/plugen-shapes-vae/{version} --params tracking.yaml")
    code, _, err = plugen(shapes, f"{registered} -o {tmp_path}/registered.png")
    assert code == 0, err
    assert joint_agreement(judge.predict(cells(tmp_path / "registered.png", 16)), REQUEST) >= 0.8
    code, _, err = plugen(shapes, f"generate --model models:/plugen-nothing@champion --params tracking.yaml -o {tmp_path}/x.png")
    assert code == 2 and "error: models:/plugen-nothing@champion: no such model in the MLflow store" in err
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def moses(tmp_path_factory) -> Path:
    return shared_moses_plugin(tmp_path_factory)


@pytest.fixture(scope="module")
def untrained_moses(tmp_path_factory) -> Path:
    return moses_plugin(tmp_path_factory.mktemp("untrained-moses"), epochs=0, n=100)


def test_molecule_outputs_are_checked_before_any_is_written(plugen, untrained_moses, tmp_path):
    generate = "generate --experiment moses-vae -n 2 --seed 0"
    (tmp_path / "taken.csv").mkdir()
    code, _, err = plugen(untrained_moses, f"{generate} -o {tmp_path}/taken.csv")
    assert code == 2 and "taken.csv: is a folder" in err and not (tmp_path / "taken.png").exists()
    code, _, err = plugen(untrained_moses, f"{generate} -o {tmp_path}/m.csv --save-latents {tmp_path}/m.png")
    assert code == 2 and "m.png: both the drawings beside -o and --save-latents would write it" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.csv"]
    code, _, err = plugen(untrained_moses, f"{generate} -o {tmp_path}/UP.CSV")
    assert code == 0, err
    assert (tmp_path / "UP.CSV").read_text().startswith("smiles,") and (tmp_path / "UP.png").is_file()


@pytest.mark.slow
def test_molecules_are_written_with_rdkit_s_properties_and_edited(plugen, moses, tmp_path):
    code, out, err = plugen(moses, f"generate --experiment moses-vae --set logp=3 -n 16 --seed 0 -o {tmp_path}/out.csv")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert len(table) == 16 and (table["requested.logp"] == 3.0).all()
    valid = table[table["smiles"] != ""]
    assert len(valid) >= 12  # a SELFIES decoder almost always writes a molecule
    measured = chemistry.properties(valid["smiles"])
    assert np.allclose(valid["rdkit.logp"].astype(float), measured["logp"], atol=1e-3)
    assert np.allclose(valid["rdkit.mw"].astype(float), measured["mw"], atol=1e-2)
    assert Image.open(tmp_path / "out.png").size[0] > 400  # the RDKit drawings

    code, out, err = plugen(moses, "edit --experiment moses-vae --input 'CCOC(=O)c1ccccc1' --set logp=3")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert re.search(r"CCOC\(=O\)c1ccccc1 .* input", lines[1]) and lines[2].rstrip().endswith("edited")

    code, _, err = plugen(moses, "edit --experiment moses-vae --input 'C1CC(' --set logp=3")
    assert code == 2 and "'C1CC(': not a valid SMILES" in err and err.count("\n") == 1
    code, _, err = plugen(moses, f"generate --experiment moses-vae --set logp=99 -o {tmp_path}/far.csv")
    assert code == 2 and "logp=99: outside the range" in err and not list(tmp_path.glob("far.*"))


@pytest.mark.slow
def test_the_installed_command_writes_the_grid(shapes, tmp_path):
    """The `plugen` entry point itself, as a user runs it, in a fresh interpreter."""
    command = f"{Path(sys.executable).parent}/plugen generate --experiment shapes-vae --set colour=red -n 4 -o {tmp_path}/cold.png"
    result = subprocess.run(shlex.split(command), cwd=shapes, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert cells(tmp_path / "cold.png", 4).shape == (4, 32, 32, 3)
