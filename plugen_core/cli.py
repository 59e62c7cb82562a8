"""The `plugen` command (also `python -m plugen_core.cli`).

    plugen generate  samples with the attributes you set (--set shape=triangle --set colour=blue), the rest drawn from
                     their marginals: images as a PNG grid; molecules as a CSV of SMILES with RDKit's properties and a
                     grid PNG beside it
    plugen edit      an image or a SMILES (--input), or saved latents (--latent, for a GAN), with attributes moved
    plugen classify  the plugin's own read-out of an input's attributes (its free classifier)
    plugen demo      the interactive page: generate and edit with one control per attribute (http://127.0.0.1:7860)
    plugen runs      the pipeline's MLflow runs per experiment, newest first: the params that differ between them, the
                     key metrics, and the model version each registered (`@champion` marks the alias)

The model is the pipeline's output for --experiment (models/<experiment>/, run from the project root), or a registered
one: --model models:/plugen-shapes-vae@champion. Bad input is one line naming it, exit code 2, and no file written.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from plugen_core import io, usage
from plugen_core.io import PlugenInputError
from plugen_core.samples import png_bytes, tile

KEY_METRICS = [
    "generation.seen.joint",
    "generation.unseen.joint",
    "generation.unseen.accuracy",
    "manipulation.joint",
    "manipulation.success",
    "manipulation.preservation",
    "classifier.accuracy",
    "fid.ratio",
    "judge.accuracy_reconstructions",
]


def runs_table(params: dict, experiment: str, metrics: list[str], max_results: int = 20) -> pd.DataFrame:
    """One row per run of `experiment`, newest first."""
    import mlflow

    client = usage.open_store(params)
    uri = mlflow.get_tracking_uri()
    runs = mlflow.search_runs(experiment_names=[experiment], max_results=max_results, order_by=["attributes.start_time DESC"])
    if runs.empty:
        raise PlugenInputError(f"no runs of MLflow experiment '{experiment}' at {uri} yet")

    name = f"plugen-{experiment}"
    registered = client.search_registered_models(f"name = '{name}'")
    aliases = registered[0].aliases if registered else {}  # {alias: version}; versions found by a search lack them
    versions = {
        v.run_id: f"v{v.version}" + "".join(f"@{a}" for a, n in aliases.items() if str(n) == str(v.version))
        for v in client.search_model_versions(f"name = '{name}'")
    }

    def column(key: str) -> pd.Series:  # a tag or metric no run has is no column at all
        return runs[key] if key in runs else pd.Series(pd.NA, index=runs.index, dtype="object")

    table = pd.DataFrame(
        {
            "run": column("tags.mlflow.runName"),
            "status": runs["status"],
            "started": runs["start_time"].dt.strftime("%Y-%m-%d %H:%M"),
            "commit": column("tags.mlflow.source.git.commit").str[:7],
            "model": runs["run_id"].map(versions),
        }
    )
    # The params that tell these runs apart; the input md5s are long, and differ exactly when a data/backbone param does.
    varying = [c for c in runs if c.startswith("params.") and not c.startswith("params.md5.") and runs[c].nunique(dropna=False) > 1]
    table = table.join(runs[varying].rename(columns=lambda c: c.removeprefix("params.")))
    table = table.join(pd.DataFrame({m: column(f"metrics.{m}") for m in metrics}).round(4))
    table.index = runs["run_id"].str[:8]
    return table


GRID_COLUMNS, GRID_ZOOM, GRID_GAP = 8, 4, 4  # an image grid: 8 to a row, each pixel 4x4 (32 px samples become 128 px)
MOLECULES_PER_ROW = 4
OUTPUT_SUFFIX = {"images": ".png", "molecules": ".csv", "vectors": ".csv"}
MAX_SAMPLES = 1024


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: a finite number >= 0 (0: every set attribute exactly at its target)")
    return value


def sample_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1 to {MAX_SAMPLES}")
    return int(text)


def check_output(trained: usage.Trained, output: str | None, required: bool) -> Path | None:
    """Refuse, before any work, an output this model cannot write."""
    suffix = OUTPUT_SUFFIX[trained.modality]
    if output is None:
        if required:
            raise PlugenInputError(f"{trained.name} writes {trained.modality}: name the output file with -o (e.g. -o out{suffix})")
        return None
    if Path(output).suffix.lower() != suffix:
        raise PlugenInputError(f"{output}: {trained.name} writes {trained.modality} as a {suffix} file; name it *{suffix}")
    return Path(output)


def drawings_beside(table: Path) -> Path:
    """Where the drawings of a molecule table go: a PNG of the same name."""
    return table.with_suffix(".png")


def sample_outputs(trained: usage.Trained, output: Path | None) -> dict[str, Path | None]:
    """The files that writing samples to `output` makes, by what names them (for messages)."""
    if trained.modality == "molecules" and output is not None:
        return {"-o": output, "the drawings beside -o": drawings_beside(output)}
    return {"-o": output}


def check_writable(outputs: dict[str, Path | None]) -> None:
    """Refuse, before any work, outputs that cannot be written: a folder, a folder that is missing or cannot be written
    in, or one file named for two outputs (the second would overwrite the first)."""
    claimed: dict[Path, str] = {}
    for name, path in outputs.items():
        if path is None:
            continue
        if path.is_dir():
            raise PlugenInputError(f"{path}: is a folder; {name} names the file to write")
        check_folder(path)
        first = claimed.setdefault(path.resolve(), name)
        if first != name:
            raise PlugenInputError(f"{path}: both {first} and {name} would write it; give each its own file")


def check_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise PlugenInputError(f"{path}: folder {folder} does not exist")
    try:  # a probe, not os.access: root passes every permission check, even in a read-only mount or /proc
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PlugenInputError(f"{path}: cannot write in folder {folder} ({e.strerror})") from e


Writers = dict[Path, Callable[[Path], object]]  # io.write_together's: each fills a temporary file for its path


def csv_writer(table: pd.DataFrame) -> Callable[[Path], object]:
    return lambda tmp: table.to_csv(tmp, index=False)


def sample_files(trained: usage.Trained, samples: np.ndarray, output: Path, requested: pd.DataFrame | None = None) -> tuple[Writers, str]:
    """Samples as this model's output file(s), to write with io.write_together, and what they hold, for the user."""
    if trained.modality == "images":
        png = png_bytes(tile(samples, min(GRID_COLUMNS, len(samples)), GRID_ZOOM, GRID_GAP))
        return {output: lambda tmp: tmp.write_bytes(png)}, f"{output} ({len(samples)} images)"
    if trained.modality == "vectors":
        table = pd.DataFrame(samples).add_prefix("x")
        return {output: csv_writer(table if requested is None else requested.join(table))}, f"{output} ({len(samples)} vectors)"
    from plugen_core.chemistry import draw_grid

    table = usage.molecule_table(samples, requested)
    grid = drawings_beside(output)
    files = {output: csv_writer(table),
             grid: lambda tmp: draw_grid(samples, usage.legends(table), MOLECULES_PER_ROW, tmp, f"{trained.name}: {output.name}")}
    return files, f"{output} ({len(samples)} molecules, {int((table['smiles'] != '').sum())} valid) and {grid}"


def describe(settings: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()) or "nothing set"


def generate_command(args: argparse.Namespace) -> None:
    trained = usage.load(args.experiment, args.model, args.params)
    settings = usage.parse_settings(args.set, trained.schema, args.extrapolate)
    output = check_output(trained, args.output, required=True)
    latents = Path(args.save_latents) if args.save_latents else None
    check_writable(sample_outputs(trained, output) | {"--save-latents": latents})
    samples, drawn, w = usage.generate(trained, settings, args.n, args.temperature, args.seed)
    files, written = sample_files(trained, samples, output, drawn)
    if latents:
        files[latents] = lambda tmp: io.save_npy(w.numpy(), tmp)
    io.write_together(files)
    print(f"wrote {written}: {describe(settings)}; other attributes drawn from their marginals")
    if latents:
        print(f"wrote {latents} ({tuple(w.shape)} latents)")


def source_latents(trained: usage.Trained, args: argparse.Namespace) -> tuple[torch.Tensor, np.ndarray | None]:
    """The latents of --input (encoded by the backbone) or --latent, and the input itself."""
    if args.latent:
        return usage.read_latents(trained, args.latent), None
    raw = usage.read_input(trained, args.input)
    return usage.encode(trained, raw), raw


def edit_command(args: argparse.Namespace) -> None:
    trained = usage.load(args.experiment, args.model, args.params)
    settings = usage.parse_settings(args.set, trained.schema, args.extrapolate)
    if not settings:
        raise PlugenInputError("nothing to edit: set at least one attribute, e.g. --set " + f"{trained.schema.names[0]}=...")
    output = check_output(trained, args.output, required=trained.modality != "molecules")
    check_writable(sample_outputs(trained, output))
    w, source = source_latents(trained, args)
    edited = usage.edit(trained, w, settings)
    if trained.modality == "molecules":  # a molecule is read as text: show the edit under its source, both measured
        sources = [] if source is None else list(source)
        table = usage.molecule_table(np.array(sources + list(edited)))
        print(table.round(3).assign(row=["input"] * len(sources) + ["edited"] * len(edited)).to_string(index=False))
    if output is not None:
        files, written = sample_files(trained, edited, output)
        io.write_together(files)
        print(f"wrote {written}: {describe(settings)}")


def classify_command(args: argparse.Namespace) -> None:
    trained = usage.load(args.experiment, args.model, args.params)
    if args.output and Path(args.output).suffix.lower() != ".csv":
        raise PlugenInputError(f"{args.output}: the read-out is a table; name it *.csv")
    check_writable({"-o": Path(args.output) if args.output else None})
    w, _ = source_latents(trained, args)
    table = usage.classify(trained, w)
    print(table.round(3).to_string(index=False))
    if args.output:
        io.write_table(table, args.output)
        print(f"wrote {args.output}")


def demo_command(args: argparse.Namespace) -> None:
    from plugen_core import demo

    demo.serve(args.experiment, args.model, args.params, args.host, args.port)


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line told in one line (and where the help is), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> None:
    ap = Parser(prog="plugen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = ap.add_subparsers(dest="command", required=True)
    params_help = "the experiments and the tracking store (default: %(default)s)"

    def model_command(name: str, help: str, settings: bool = True) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help, description=help)
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--experiment", help="an experiment of params.yaml, from the pipeline's outputs (models/<experiment>/)")
        source.add_argument("--model", help="a registered MLflow model instead, e.g. models:/plugen-shapes-vae@champion")
        parser.add_argument("--params", default="params.yaml", help=params_help)
        if settings:
            parser.add_argument("--set", action="append", default=[], metavar="ATTRIBUTE=VALUE",
                                help="an attribute's value (a class, 0/1, or a number); repeatable")
            parser.add_argument("--extrapolate", action="store_true", help="allow continuous values outside the trained range")
        return parser

    def input_arguments(parser: argparse.ArgumentParser) -> None:
        given = parser.add_mutually_exclusive_group(required=True)
        given.add_argument("--input", help="an image file (image models) or a SMILES (molecule models)")
        given.add_argument("--latent", help="a .npy of latents saved by `plugen generate --save-latents` (a GAN has no encoder)")

    gen = model_command("generate", "samples with the attributes you set; the others are drawn from their marginals")
    gen.add_argument("-n", type=sample_count, default=16, help=f"how many samples, 1-{MAX_SAMPLES} (default: %(default)s)")
    gen.add_argument("-o", "--output", help="images: a .png grid; molecules: a .csv of SMILES with RDKit properties, and a .png")
    gen.add_argument("--temperature", type=temperature, help="spread of the attributes around their targets (default: the evaluation's)")
    gen.add_argument("--seed", type=int, help="the same seed draws the same samples")
    gen.add_argument("--save-latents", metavar="FILE.npy", help="also write the samples' latents, to edit them later with --latent")
    gen.set_defaults(handler=generate_command)

    edit = model_command("edit", "an input with the attributes you set moved and everything else kept")
    input_arguments(edit)
    edit.add_argument("-o", "--output", help="images: the edited image(s), a .png; molecules: a .csv (the edit is printed too)")
    edit.set_defaults(handler=edit_command)

    read = model_command("classify", "the plugin's own read-out of an input's attributes (its free classifier)", settings=False)
    input_arguments(read)
    read.add_argument("-o", "--output", help="also write the read-out as a .csv")
    read.set_defaults(handler=classify_command)

    page = commands.add_parser("demo", help="the interactive page", description="generate and edit on a page, one control per attribute")
    page.add_argument("--experiment", action="append", help="an experiment to offer; repeatable (default: each one trained here)")
    page.add_argument("--model", action="append", help="a registered MLflow model to offer too; repeatable")
    page.add_argument("--params", default="params.yaml", help=params_help)
    page.add_argument("--host", default="127.0.0.1", help="the address to bind (default: %(default)s, this machine only)")
    page.add_argument("--port", type=int, default=7860)
    page.set_defaults(handler=demo_command)

    runs = commands.add_parser("runs", help="compare the pipeline's MLflow runs")
    runs.add_argument("--params", default="params.yaml", help="where the tracking settings are read (default: %(default)s)")
    runs.add_argument("--metric", action="append", help=f"a metric column; repeatable (default: {' '.join(KEY_METRICS)})")
    runs.add_argument("--experiment", action="append", help="an experiment of params.yaml; repeatable (default: every one listed)")
    runs.add_argument("--max-results", type=int, default=20)
    runs.set_defaults(handler=runs_command)
    args = ap.parse_args(argv)
    io.run_stage(lambda: args.handler(args))


def runs_command(args: argparse.Namespace) -> None:
    params = io.load_params(args.params)
    for experiment in args.experiment or list(io.section(params, "experiments")):
        print(f"== {experiment}")
        print(runs_table(params, experiment, args.metric or KEY_METRICS, args.max_results).to_string())


if __name__ == "__main__":
    main()
