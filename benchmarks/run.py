"""Performance benchmark: run it alone on the machine (anything beside it makes its timings worthless).

    python -m benchmarks.run                      # every section, about 15 minutes on 2 cores
    python -m benchmarks.run --sections step,nll  # some of them

Sections (each a ratio measured in this one run, on this machine):
  step      the default flow's training step against a plain MLP of the same layer shapes with the same optimiser
            (the ceiling on this hardware) and against the loop as filed in #14 (benchmarks/filed.py)
  nll       held-out NLL against seconds on shapes-vae latents, today's loop and the filed one from the same weights
  generate  conditional latents per second, 10,000 at once
  scale     seconds and peak memory of a flow epoch on 16 k to 1 M synthetic latents
  pipeline  the smoke pipeline's stage times quiet and beside a busy process; a two-job sweep against one job
Results go to benchmarks/results.json (sections merged with earlier runs) and the tables between the markers of
docs/performance.md, with the time-to-NLL figure docs/performance-nll.png.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmarks import filed
from plugen_core import config, flow, threads
from plugen_core.io import atomic_path, load_params, read_array, read_table, write_json
from plugen_core.layout import Layout
from plugen_core.schema import Attribute, Schema
from plugen_core.stages.train_flow import build_plugin, train, training_set

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.json"
DOC = REPO / "docs" / "performance.md"
MARKERS = ("<!-- benchmark:begin -->", "<!-- benchmark:end -->")
SECTIONS = ("step", "nll", "generate", "scale", "pipeline")
EXPERIMENT = "shapes-vae"
SCHEMA = Schema([  # the shapes dataset's attributes: the synthetic latents' labels have its layout
    Attribute("shape", "categorical", classes=["circle", "square", "triangle"]),
    Attribute("colour", "categorical", classes=["red", "green", "blue"]),
    Attribute("hollow", "binary"),
    Attribute("light_background", "binary"),
    Attribute("size", "continuous", low=5.0, high=10.0),
    Attribute("x", "continuous", low=10.0, high=22.0),
])


def flow_params() -> dict:
    return config.experiment(load_params(REPO / "params.yaml"), EXPERIMENT)["flow"]


def synthetic(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n random latents and encoded labels in the shapes layout; half the rows unlabelled (the mixture prior's case)."""
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({
        "shape": rng.choice(SCHEMA.attributes[0].classes, n), "colour": rng.choice(SCHEMA.attributes[1].classes, n),
        "hollow": rng.integers(0, 2, n), "light_background": rng.integers(0, 2, n),
        "size": rng.uniform(5, 10, n), "x": rng.uniform(10, 22, n),
    })
    context = torch.from_numpy(SCHEMA.encode(labels))
    context[: n // 2] = float("nan")
    return torch.from_numpy(rng.standard_normal((n, dim), dtype=np.float32)), context


def new_model(context: torch.Tensor, dim: int, p: dict, schema: Schema = SCHEMA, seed: int = 0) -> flow.PluGeN:
    torch.manual_seed(seed)
    return build_plugin(schema, dim, context[~torch.isnan(context).all(dim=1)].numpy(), p)


def fit_epochs(model, w, context, p, epochs, generator, on_epoch=None) -> list[dict]:
    return train(model, w, context, {**p, "epochs": epochs}, generator, on_epoch=on_epoch)


def filed_epochs(model, w, context, p, epochs, generator, on_epoch=None) -> list[dict]:
    """The filed loop over the same epochs, schedule and batches as `flow.fit`."""
    opt, labelled, history, clock = filed.optimiser(model, p["lr"]), ~torch.isnan(context).all(dim=1), [], 0.0
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        model.prior.sigma.fill_(flow.sigma_schedule(epoch, p["sigma0"], p["sigma_gamma"], p["sigma_min"]))
        order = flow.epoch_order(labelled, p["labelled_share"], generator)
        nll = filed.epoch(model, opt, w, context, labelled, order, p["batch_size"], p["grad_clip"], p["input_noise"], generator, torch.device("cpu"))
        clock += time.perf_counter() - start
        history.append({"epoch": epoch + 1, "nll": nll, "elapsed_s": clock})
        if on_epoch is not None:
            on_epoch(history[-1])
    return history


def plain_mlp(model: flow.PluGeN) -> nn.Sequential:
    """The coupling nets' layers as one plain MLP (their shapes chain: half -> hidden ... -> half -> hidden ...)."""
    nets = [copy.deepcopy(net.net) for net in model.transform._transforms[0].nets]
    return nn.Sequential(*[layer for net in nets for layer in net])


def mlp_epoch(mlp: nn.Sequential, opt, x: torch.Tensor, order: torch.Tensor, batch_size: int, grad_clip: float) -> None:
    parameters = list(mlp.parameters())
    for idx in order.split(batch_size):
        loss = mlp(x[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip, foreach=True)
        opt.step()


def step_section(rounds: int = 11, batches: int = 100) -> dict:
    """Milliseconds per training step: rounds of one epoch each, the three loops interleaved, medians."""
    p = {**flow_params(), "batch_size": 256, "epochs": 1}  # the shared default flow's shapes and batch
    dim = 32
    w, context = synthetic(p["batch_size"] * batches, dim)
    ours, reference = new_model(context, dim, p), filed.model_like(new_model(context, dim, p))
    mlp = plain_mlp(ours)
    mlp_opt, half = flow.optimiser(mlp.parameters(), p["lr"]), mlp[0].in_features
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"today": [], "filed": [], "mlp": []}
    n_steps = len(flow.epoch_order(~torch.isnan(context).all(dim=1), p["labelled_share"], generator).split(p["batch_size"]))
    for r in range(rounds + 1):  # round 0 warms up
        for name, run in (
            ("today", lambda: fit_epochs(ours, w, context, p, 1, generator)),
            ("filed", lambda: filed_epochs(reference, w, context, p, 1, generator)),
            ("mlp", lambda: mlp_epoch(mlp, mlp_opt, w[:, :half].contiguous(), torch.randperm(len(w), generator=generator)[: n_steps * p["batch_size"]], p["batch_size"], p["grad_clip"])),
        ):
            start = time.perf_counter()
            run()
            if r:
                times[name].append((time.perf_counter() - start) / n_steps * 1000)
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {
        "batch_size": p["batch_size"], "couplings": p["couplings"], "hidden": p["hidden"], "layers": p["layers"],
        "steps_per_round": n_steps, "rounds": rounds, "ms": ms, "spread_ms": {k: [min(t), max(t)] for k, t in times.items()},
        "today_over_mlp": ms["today"] / ms["mlp"], "filed_over_today": ms["filed"] / ms["today"],
    }


def shapes_latents() -> tuple[dict, tuple, tuple]:
    """shapes-vae's flow settings, training set and held-out (test) latents with labels, from the pipeline's files."""
    cfg = config.experiment(load_params(REPO / "params.yaml"), EXPERIMENT)
    layout = Layout(cfg)
    if not (REPO / layout.table).is_file():
        subprocess.run([sys.executable, "-m", "dvc", "repro", f"align_labels@{EXPERIMENT}"], cwd=REPO, check=True)
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        w, context, schema = training_set(layout, cfg["flow"]["use_unlabelled"])
        table, latents = read_table(layout.table), read_array(layout.latents)
    finally:
        os.chdir(cwd)
    test = (table["split"] == "test").to_numpy()
    held_out = torch.from_numpy(np.ascontiguousarray(latents[test])), torch.from_numpy(schema.encode(table.loc[test, schema.names]))
    return cfg["flow"], (w, torch.from_numpy(context), schema), held_out


def nll_section(epochs: int) -> dict:
    p, (w, context, schema), (w_test, c_test) = shapes_latents()
    curves = {}
    for name, loop in (("today", fit_epochs), ("filed", filed_epochs)):
        model = new_model(context, w.shape[1], p, schema)
        model = model if name == "today" else filed.model_like(model)
        rows = []

        def score(row, model=model, rows=rows):
            model.eval()
            with torch.no_grad():
                rows.append({"epoch": row["epoch"], "seconds": row["elapsed_s"], "train_nll": row["nll"], "held_out_nll": model.loss(w_test, c_test).item()})

        loop(model, w, context, p, epochs, torch.Generator().manual_seed(0), on_epoch=score)
        curves[name] = rows
    target = curves["filed"][-1]["held_out_nll"]
    reach = {name: next((r["seconds"] for r in rows if r["held_out_nll"] <= target), None) for name, rows in curves.items()}
    return {
        "experiment": EXPERIMENT, "latents": len(w), "held_out": len(w_test), "batch_size": p["batch_size"], "epochs": epochs,
        "curves": curves, "target_nll": target, "seconds_to_target": reach,
        "max_abs_nll_difference": max(abs(a["held_out_nll"] - b["held_out_nll"]) for a, b in zip(curves["today"], curves["filed"])),
    }


def generate_section(n: int = 10_000, rounds: int = 5) -> dict:
    p = flow_params()
    w, context = synthetic(4096, 32)
    ours = new_model(context, 32, p)
    fit_epochs(ours, w, context, {**p, "batch_size": 256}, 1, torch.Generator().manual_seed(0))  # ActNorm initialised
    ours.eval()
    reference = filed.model_like(ours).eval()
    targets = SCHEMA.decode(synthetic(2 * n, 32, seed=1)[1][n:].numpy())  # n fully specified requests
    out = {}
    for name, model in (("today", ours), ("filed", reference)):
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            model.sample_latents(targets, generator=torch.Generator().manual_seed(0))
            times.append(time.perf_counter() - start)
        out[name] = {"ms": statistics.median(times) * 1000, "latents_per_s": n / statistics.median(times)}
    return {"n": n, **out}


def scale_one(n: int) -> dict:
    """One flow epoch on n synthetic latents (a child process per size, so its peak memory is its own)."""
    import resource

    p = {**flow_params(), "batch_size": 256}
    w, context = synthetic(n, 32)
    model = new_model(context, 32, p)
    history = fit_epochs(model, w, context, p, 1, torch.Generator().manual_seed(0))
    steps = -(-len(flow.epoch_order(~torch.isnan(context).all(dim=1), p["labelled_share"], torch.Generator())) // p["batch_size"])
    seconds = history[-1]["elapsed_s"]
    return {"n": n, "seconds": seconds, "steps": steps, "us_per_latent": seconds / n * 1e6, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def scale_section(sizes=(16_000, 64_000, 256_000, 1_000_000)) -> dict:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.run", "--scale-one", str(n)], cwd=REPO, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return {"sizes": rows}


def pipeline_section() -> dict:
    """The smoke pipeline (tests/conftest.py's params) in a fresh copy of this checkout, stage by stage."""
    sys.path.insert(0, str(REPO))
    from tests.conftest import SMOKE_PARAMS, copy_repo, set_params

    def dvc(repo, *args, env=None):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, capture_output=True, env=env)

    def stages_timed(repo) -> dict:
        names = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only", "dvc.yaml"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
        times = {}
        for name in names:  # dvc.yaml lists them in dependency order
            start = time.perf_counter()
            dvc(repo, "repro", "--force", "--no-run-cache", "--single-item", name)
            times[name] = time.perf_counter() - start
        return times

    with tempfile.TemporaryDirectory() as tmp:
        repo = copy_repo(Path(tmp))
        set_params(repo / "params.yaml", SMOKE_PARAMS)
        subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@localhost", "commit", "-qam", "smoke"], cwd=repo, check=True)
        quiet = stages_timed(repo)
        busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = stages_timed(repo)
            set_params(repo / "params.yaml", {"threads": 2})  # what every stage did before `threads: auto`
            busy_two_threads = stages_timed(repo)
            subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)
        finally:
            busy_process.kill()
        sweeps = {}
        for jobs, seeds in ((1, "1,2"), (2, "3,4")):  # new seeds each time: nothing comes from the run cache
            start = time.perf_counter()
            sweep = subprocess.run([sys.executable, "-m", "flows.sweep", "--grid", f"seed={seeds}", "--jobs", str(jobs)], cwd=repo, capture_output=True, text=True)
            if sweep.returncode:
                raise RuntimeError(f"flows.sweep --jobs {jobs} failed:\n{sweep.stdout[-3000:]}\n{sweep.stderr[-3000:]}")
            sweeps[jobs] = time.perf_counter() - start
    return {
        "stages": list(quiet),  # dvc.yaml's order: the json file sorts its keys
        "quiet_s": quiet, "busy_s": busy, "busy_over_quiet": sum(busy.values()) / sum(quiet.values()),
        "busy_two_threads_s": busy_two_threads, "busy_two_threads_over_quiet": sum(busy_two_threads.values()) / sum(quiet.values()),
        "sweep_one_job_s": sweeps[1], "sweep_two_jobs_s": sweeps[2], "two_jobs_over_one": sweeps[2] / sweeps[1],
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores_allowed": threads.cores_allowed(), "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def markdown(results: dict) -> str:
    """The results as the tables of docs/performance.md."""
    m = results["machine"]
    out = [f"Machine: {m['cpu']}, {m['cores_allowed']} core(s), {m['threads']} torch thread(s), torch {m['torch']}, Python {m['python']}.", ""]
    if s := results.get("step"):
        out += [
            f"**Training step** (default flow: {s['couplings']} couplings x {s['layers']} layers x {s['hidden']}, batch {s['batch_size']}; median of {s['rounds']} rounds of {s['steps_per_round']} steps, interleaved; run {s['date']})",
            "", "| loop | ms / step | range |", "| --- | ---: | ---: |",
            *[f"| {name} | {s['ms'][key]:.2f} | {s['spread_ms'][key][0]:.2f}-{s['spread_ms'][key][1]:.2f} |" for key, name in (("mlp", "plain MLP, same layers and optimiser (ceiling)"), ("today", "flow, `flow.fit` today"), ("filed", "flow, the loop as filed (benchmarks/filed.py)"))],
            "", f"Today / MLP: **{s['today_over_mlp']:.2f}x**; filed / today: **{s['filed_over_today']:.2f}x** faster.", "",
        ]
    if s := results.get("nll"):
        reach = s["seconds_to_target"]
        fmt = lambda v: f"{v:.1f} s" if v is not None else "not reached"  # noqa: E731
        out += [
            f"**Time to held-out NLL** ({s['experiment']} latents: {s['latents']} training, {s['held_out']} held out; batch {s['batch_size']}; same initial weights and batches; run {s['date']})",
            "", "| epoch | today: s | today: held-out NLL | filed: s | filed: held-out NLL |", "| ---: | ---: | ---: | ---: | ---: |",
            *[f"| {a['epoch']} | {a['seconds']:.1f} | {a['held_out_nll']:.3f} | {b['seconds']:.1f} | {b['held_out_nll']:.3f} |" for a, b in zip(s["curves"]["today"], s["curves"]["filed"]) if a["epoch"] in (1, 2, 5, 10, 20) or a["epoch"] % 20 == 0 or a["epoch"] == s["epochs"]],
            "", f"Seconds to reach the filed loop's final held-out NLL {s['target_nll']:.3f}: today {fmt(reach['today'])}, filed {fmt(reach['filed'])}. Largest per-epoch difference in held-out NLL between the two: {s['max_abs_nll_difference']:.4f}.",
            "", "![time to NLL](performance-nll.png)", "",
        ]
    if s := results.get("generate"):
        out += [f"**Generation** (run {s['date']}): {s['n']:,} conditional latents at once: today {s['today']['ms']:.0f} ms ({s['today']['latents_per_s']:,.0f} latents/s), filed {s['filed']['ms']:.0f} ms ({s['filed']['latents_per_s']:,.0f} latents/s).", ""]
    if s := results.get("scale"):
        base = s["sizes"][0]["us_per_latent"]
        out += [f"**Scale** (one flow epoch, batch 256, synthetic latents of width 32; run {s['date']})", "", "| latents | steps | s / epoch | us / latent | vs smallest | peak RSS MB |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        out += [f"| {r['n']:,} | {r['steps']:,} | {r['seconds']:.1f} | {r['us_per_latent']:.1f} | {r['us_per_latent'] / base:.2f} | {r['peak_rss_mb']:.0f} |" for r in s["sizes"]] + [""]
    if s := results.get("pipeline"):
        columns = ("quiet_s", "busy_s", "busy_two_threads_s")
        out += [
            f"**Smoke pipeline, stage by stage** (tests/conftest.py params; `busy`: one `while True: pass` process beside it; run {s['date']})",
            "", "| stage | quiet, `threads: auto` s | busy, `threads: auto` s | busy, `threads: 2` s |", "| --- | ---: | ---: | ---: |",
            *[f"| {name} | " + " | ".join(f"{s[c][name]:.1f}" for c in columns) + " |" for name in s["stages"]],
            "| total | " + " | ".join(f"{sum(s[c].values()):.1f}" for c in columns) + " |",
        ]
        out += ["", f"Busy / quiet: **{s['busy_over_quiet']:.2f}x** with `threads: auto`, {s['busy_two_threads_over_quiet']:.2f}x with two threads per stage. Sweep of two smoke experiments (`flows.sweep --grid seed=...`): one job {s['sweep_one_job_s']:.0f} s, two jobs {s['sweep_two_jobs_s']:.0f} s (**{s['two_jobs_over_one']:.2f}x**).", ""]
    return "\n".join(out)


def plot_nll(nll: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rows in nll["curves"].items():
        ax.plot([r["seconds"] for r in rows], [r["held_out_nll"] for r in rows], marker=".", label=name)
    ax.set(xlabel="training seconds", ylabel="held-out NLL per latent", title=f"{nll['experiment']}: time to NLL")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    ap.add_argument("--nll-epochs", type=int, default=40)
    ap.add_argument("--scale-one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads.configure("auto")
    if args.scale_one:
        print(json.dumps(scale_one(args.scale_one)))
        return
    sections = args.sections.split(",")
    if unknown := set(sections) - set(SECTIONS):
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["machine"] = machine()
    run = {"step": step_section, "nll": lambda: nll_section(args.nll_epochs), "generate": generate_section, "scale": scale_section, "pipeline": pipeline_section}
    for name in sections:
        print(f"[benchmark] {name} ...", flush=True)
        results[name] = run[name]() | {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # sections may be rerun apart
        write_json(results, RESULTS)  # each section kept as it finishes
    if "nll" in results:
        plot_nll(results["nll"], DOC.parent / "performance-nll.png")
    text = DOC.read_text()
    start, end = text.index(MARKERS[0]) + len(MARKERS[0]), text.index(MARKERS[1])
    with atomic_path(DOC) as tmp:
        tmp.write_text(text[:start] + "\n" + markdown(results) + "\n" + text[end:])
    print(markdown(results))


if __name__ == "__main__":
    main()
