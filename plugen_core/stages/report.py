"""Stage `report`: every experiment's PluGeN metrics (metrics/<experiment>/metrics.json) beside its baselines'
(metrics/<experiment>/baselines.json) in reports/benchmark.md, one table per experiment with the best value of each
column in bold, a bar chart per key metric and each experiment's grids of never-labelled combinations drawn by every
method (reports/figures/); and where `flows.label_efficiency` left a table (reports/label_efficiency/<experiment>.csv),
each method's scores against the labelled-set size, seed-averaged. Both are committed, so the report reads whole on a
clean checkout. Regenerate: `dvc repro reports/dvc.yaml`."""
from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import pandas as pd

from plugen_core import config, plots
from plugen_core.io import atomic_dir, atomic_path, load_params, read_json, run_stage, section
from plugen_core.layout import Layout

REPORT = Path("reports/benchmark.md")
FIGURES = Path("reports/figures")
EFFICIENCY = Path("reports/label_efficiency")  # flows/label_efficiency.py writes <experiment>.csv
EFFICIENCY_METRICS = ("generation.unseen.joint", "manipulation.joint")
# column: (PluGeN's key, a baseline's key, direction); None: the key every method writes under the same name
COLUMNS = {
    "generation.seen.joint": (None, None, "max"),
    "generation.unseen.joint": (None, None, "max"),
    "generation.unseen.accuracy": (None, None, "max"),
    "generation.unseen.continuous_mae": (None, None, "min"),
    "manipulation.success": (None, None, "max"),
    "manipulation.preservation": (None, None, "max"),
    "manipulation.joint": (None, None, "max"),
    "fid": ("fid.plugen_samples", "fid", "min"),
    "time.fit_s": ("time.train_flow_s", "time.fit_s", "min"),
    "time.generate_1000_s": (None, None, "min"),
}
# a molecule experiment's (RDKit judges it: plugen_core/molecule_evaluation.py says what each key means)
MOLECULE_COLUMNS = {
    "generation.validity": (None, None, "max"),
    "generation.seen.continuous_mae": (None, None, "min"),
    "target.mae_fraction": (None, None, "min"),
    "generation.unseen.joint": (None, None, "max"),
    "generation.unseen.lift": (None, None, "max"),
    "manipulation.success": (None, None, "max"),
    "manipulation.preservation": (None, None, "max"),
    "manipulation.tanimoto_median": (None, None, "max"),
    "fcd": ("fcd.plugen_samples", "fcd", "min"),
    "time.fit_s": ("time.train_flow_s", "time.fit_s", "min"),
    "time.generate_1000_s": (None, None, "min"),
}
CHARTED = ("generation.unseen.joint", "generation.seen.joint", "manipulation.joint", "fid")


def columns_for(plugen: dict) -> dict:
    return MOLECULE_COLUMNS if plugen.get("judge.space") == "rdkit" else COLUMNS


def table(plugen: dict, baselines: dict) -> pd.DataFrame:
    """Methods (rows) by the experiment's columns; NaN where a method has no such score (rejection sampling does not
    edit)."""
    columns = columns_for(plugen)
    methods = sorted({key.split(".")[1] for key in baselines})
    rows = {"plugen": {c: plugen.get(own or c, math.nan) for c, (own, _, _) in columns.items()}}
    for m in methods:
        rows[m] = {c: baselines.get(f"baselines.{m}.{theirs or c}", math.nan) for c, (_, theirs, _) in columns.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def markdown(frame: pd.DataFrame) -> str:
    """The table with the best value of each column in bold (when there is more than one method to compare)."""
    direction = {c: spec[2] for c, spec in (COLUMNS | MOLECULE_COLUMNS).items()}
    best = {c: (frame[c].max() if direction[c] == "max" else frame[c].min()) if len(frame) > 1 else math.nan for c in frame.columns}
    header = "| method | " + " | ".join(frame.columns) + " |\n|" + " --- |" * (len(frame.columns) + 1) + "\n"
    cells = lambda row: [("" if math.isnan(v) else f"**{v:.3f}**" if v == best[c] else f"{v:.3f}") for c, v in row.items()]  # noqa: E731
    return header + "".join(f"| {name} | " + " | ".join(cells(row)) + " |\n" for name, row in frame.iterrows())


def efficiency(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Label-efficiency runs (a row per method, unlabelled or not, size, seed) as a series per method (PluGeN without
    the unlabelled latents its own) by labelled-set size: mean, min and max of `metric` over seeds."""
    named = runs.assign(series=runs["method"].where(runs["unlabelled"], runs["method"] + " (labelled latents only)"))
    return named.dropna(subset=[metric]).groupby(["series", "labelled"])[metric].agg(["mean", "min", "max"])  # NaN: no such score (rejection does not edit)


def efficiency_markdown(stats: pd.DataFrame, metric: str) -> str:
    """Series (rows) by size: the mean over seeds with its range in brackets; the best mean of each size in bold."""
    means = stats["mean"].unstack()
    best = means.max()

    def cell(series: str, size: int) -> str:
        mean, low, high = stats.loc[(series, size)]
        return "" if math.isnan(mean) else (f"**{mean:.3f}**" if mean == best[size] else f"{mean:.3f}") + f" ({low:.2f}-{high:.2f})"

    header = f"| {metric} by labelled samples | " + " | ".join(map(str, means.columns)) + " |\n|" + " --- |" * (len(means.columns) + 1) + "\n"
    return header + "".join(f"| {name} | " + " | ".join(cell(name, n) for n in means.columns) + " |\n" for name in means.index)


def efficiency_section(experiment: str, runs: pd.DataFrame, figures: Path) -> list[str]:
    """The report's lines on one experiment's label-efficiency runs: a table and a curve figure per metric."""
    sizes, seeds = (sorted(int(v) for v in runs[k].unique()) for k in ("labelled", "seed"))
    command = f"python -m flows.label_efficiency --experiment {experiment} --sizes {','.join(map(str, sizes))} --seeds {','.join(map(str, seeds))}"
    lines = [f"## Label efficiency: {experiment}", "",
             f"Every method fitted on labelled subsets of each size, with seeds {seeds} (the mean, and in brackets the range",
             "over seeds), as DVC experiments through `plugen-sweep`; PluGeN also on the labelled latents alone for about as",
             f"many optimiser steps. Regenerate (README.md says how long it takes), then the report: `{command} && dvc repro reports/dvc.yaml`.", ""]
    for metric in EFFICIENCY_METRICS:
        stats = efficiency(runs, metric)
        series = {name: tuple(list(part[k]) for k in ("mean", "min", "max")) for name, part in stats.groupby(level="series")}
        figure = f"{experiment}_efficiency_{metric}.png"
        plots.spread_curves(sizes, series, figures / figure, f"{experiment}: {metric} against labelled samples", "labelled samples", metric)
        lines += [efficiency_markdown(stats, metric), f"![{experiment}: {metric} against labelled samples](figures/{figure})", ""]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    params = load_params(ap.parse_args().params)
    layouts = {e: Layout(config.experiment(params, e)) for e in section(params, "experiments")}
    experiments = list(layouts)
    plugen = {e: read_json(layout.metrics) for e, layout in layouts.items()}
    tables = {e: table(plugen[e], read_json(layout.baseline_metrics)) for e, layout in layouts.items()}
    runs = {e: pd.read_csv(EFFICIENCY / f"{e}.csv") for e in experiments if (EFFICIENCY / f"{e}.csv").is_file()}

    lines = ["# Benchmark: PluGeN against the baselines", "",
             "Every method is fitted on the latents and labels the plugin trains on and scored by the same code, judge and",
             "targets (`evaluate`, `baselines` stages). Bold: the best of each column. `fid`: on the judge's features",
             "(lower is better); `time.fit_s`: seconds to train (PluGeN: its flow). Regenerate: `dvc repro reports/dvc.yaml`.", ""]
    methods = sorted({m for t in tables.values() for m in t.index})
    with atomic_dir(FIGURES) as out:
        for column in CHARTED:
            series = {m: [tables[e].loc[m, column] if m in tables[e].index and column in tables[e] else math.nan for e in experiments] for m in methods}
            plots.grouped_bars(experiments, series, out / f"{column}.png", f"{column} ({COLUMNS[column][2]} is better)")
        for e, frame in tables.items():
            lines += [f"## {e}", ""]
            if "fcd" in frame:
                lines += ["Scored by RDKit on the molecules each method decodes: `target.mae_fraction` is the MAE of single-property",
                          "requests as a fraction of each property's range (mean over properties), `generation.unseen.*` the held-out",
                          "region (`lift`: its hit rate over the backbone's own), `fcd` the Fréchet ChemNet Distance to the test set.", ""]
                ceiling = plugen[e]
                if "reconstructions.unseen.joint" in ceiling:  # what the backbone allows there (stages/evaluate_molecules.py)
                    lines += [f"The backbone's own reconstructions of the real test molecules inside the region land in it "
                              f"{ceiling['reconstructions.unseen.joint']:.3f} of the time (lift {ceiling['reconstructions.unseen.lift']:.2f}):",
                              "what a method whose latents sat exactly on real molecules of the region would reach.", ""]
            lines += [markdown(frame)]
            for grid in sorted(layouts[e].baselines.glob("unseen_*.png")):  # copied: the report is whole in reports/
                shutil.copyfile(grid, out / f"{e}_{grid.name}")
                lines += [f"![{e}: a never-labelled combination drawn by each method](figures/{e}_{grid.name})", ""]
        lines += ["## Figures", ""] + [f"![{c}](figures/{c}.png)" for c in CHARTED] + [""]
        for e, frame in runs.items():
            lines += efficiency_section(e, frame, out)
    with atomic_path(REPORT) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print(f"[report] wrote {REPORT} and {FIGURES}/ ({len(experiments)} experiments)")


if __name__ == "__main__":
    run_stage(main)
