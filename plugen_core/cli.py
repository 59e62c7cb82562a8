"""The `plugen` command (also `python -m plugen_core.cli`).

    plugen runs    the pipeline's MLflow runs per experiment, newest first: the params that differ between them, the
                   key metrics, and the model version each registered (`@champion` marks the alias)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from plugen_core import io, tracking
from plugen_core.io import PlugenInputError

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

    uri = tracking.tracking_uri(params)
    if uri is None:
        raise PlugenInputError("tracking is off in the params (tracking.uri: off, or no tracking section): no runs to show")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PlugenInputError(f"no MLflow store at {uri} yet: run the pipeline first, or run this from the project root")
    client = tracking.connect(uri)
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="plugen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = ap.add_subparsers(dest="command", required=True)
    runs = commands.add_parser("runs", help="compare the pipeline's MLflow runs")
    runs.add_argument("--params", default="params.yaml", help="where the tracking settings are read (default: %(default)s)")
    runs.add_argument("--metric", action="append", help=f"a metric column; repeatable (default: {' '.join(KEY_METRICS)})")
    runs.add_argument("--experiment", action="append", help="an experiment of params.yaml; repeatable (default: every one listed)")
    runs.add_argument("--max-results", type=int, default=20)
    args = ap.parse_args(argv)

    def show() -> None:
        params = io.load_params(args.params)
        for experiment in args.experiment or list(io.section(params, "experiments")):
            print(f"== {experiment}")
            print(runs_table(params, experiment, args.metric or KEY_METRICS, args.max_results).to_string())

    io.run_stage(show)


if __name__ == "__main__":
    main()
