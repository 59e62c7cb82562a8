"""Stage `baselines@<experiment>`: the methods PluGeN is measured against (plugen_core/baselines/), each fitted on the
latents and labels the plugin trains on and scored by the same code, judge and targets as `evaluate`: seen / unseen /
joint generation, manipulation (for methods that edit), FID and KID of their samples on the judge's features, and the
seconds to fit and to generate 1000. They draw from the backbone's prior, or for a backbone with an encoder (a VAE)
from a Gaussian fitted to the training latents. Writes `metrics/<experiment>/baselines.json` (`baselines.<method>.<key>`,
a DVC metric) and, for images, a grid per held-out combination drawn by every method and by PluGeN
(`baselines/<experiment>/unseen_<i>.png`).

A molecule experiment's methods are scored as its plugin is (stages/evaluate_molecules.py: RDKit is the judge), FCD
to the test set in place of FID; it has no grids."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from plugen_core import baselines, chemistry, config, plots
from plugen_core.backbones import load_backbone
from plugen_core.evaluation import FeatureExtractor, check_settings, fid_kid, score_controls, uniform_targets
from plugen_core.flow import PluGeN
from plugen_core.io import PlugenInputError, atomic_dir, run_stage, write_json
from plugen_core.judge import Judge, PropertyJudge
from plugen_core.stages import experiment_stage
from plugen_core.stages.evaluate import read_test_data
from plugen_core.stages.evaluate_molecules import check_molecule_settings, read_molecule_test, score_molecule_controls
from plugen_core.stages.train_flow import training_set

N_GRID = 8  # samples per method in the grid


def main() -> None:
    cfg, layout, generator, device = experiment_stage(__doc__)
    ev, methods = cfg["evaluate"], cfg["baselines"]
    check_settings(ev)
    if not methods or set(methods) - set(baselines.METHODS):
        raise PlugenInputError(f"params: baselines must map methods of {list(baselines.METHODS)} to their settings, got {methods!r}")
    backbone = load_backbone(layout.backbone, cfg["backbone"]).to(device)
    w, context, schema = training_set(layout, cfg["flow"]["use_unlabelled"])  # what the plugin learnt from
    # where the methods draw from: a VAE's N(0, I) prior decodes to blurs far from its encoded latents, so there a
    # Gaussian fitted to the training latents (the plugin's flow learns their distribution too); a GAN's own prior
    prior = baselines.GaussianPrior(w) if backbone.has_encoder else backbone.sample_prior
    methods = fitted(methods, prior, w, context, schema, generator)
    if cfg["dataset"]["source"] in config.MOLECULE_SOURCES:
        molecule_baselines(cfg, layout, backbone, methods, generator, device)
    else:
        image_baselines(cfg, layout, backbone, methods, generator, device)


def fitted(methods: dict, prior, w, context, schema, generator):
    """Each method of the `baselines` params fitted in turn (lazily): (name, method, seconds it took to fit)."""
    for name, settings in methods.items():
        try:
            method = baselines.create(name, prior=prior, **(settings or {}))
        except TypeError as e:  # an unknown setting
            raise PlugenInputError(f"params: baselines.{name}: {e}") from e
        start = time.perf_counter()
        method.fit(w, context, schema, generator)
        yield name, method, time.perf_counter() - start


def molecule_baselines(cfg: dict, layout, backbone, methods, generator, device) -> None:
    """Every method scored by RDKit as the plugin is, with the same targets, edits and reference molecules."""
    ev, held_out = cfg["evaluate"], cfg["dataset"]["labelled"]["held_out"] or []
    judge = PropertyJudge.load(layout.judge)
    check_molecule_settings(ev, judge.schema, cfg["name"])
    test = read_molecule_test(cfg, layout, backbone, judge, generator)
    metrics, drawn = {}, {}
    for name, method, seconds in methods:
        def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
            return backbone.decode_data(method.sample_latents(targets, n_per_target, ev["temperature"], generator)[0])

        edit = (lambda latents, edits: backbone.decode_data(method.manipulate(latents, edits))) if method.can_edit else None
        # a fresh generator of the same seed: the region's targets evaluate gave PluGeN
        scores, drawn[name], _, _ = score_molecule_controls(generate, edit, judge, ev, held_out, test, np.random.default_rng(cfg["seed"]), device)
        metrics |= {f"baselines.{name}.{key}": value for key, value in (scores | {"time.fit_s": seconds}).items()}
        print(f"[baselines] {name}: fitted in {seconds:.1f}s; held-out region joint {scores.get('generation.unseen.joint', float('nan')):.3f}, "
              f"target MAE {scores['target.mae_fraction']:.3f} of the range, manipulation success {scores.get('manipulation.success', float('nan')):.3f}")
    metrics |= {f"baselines.{name}.fcd": value for name, value in chemistry.fcd(test.smiles, drawn).items()}
    with atomic_dir(layout.baselines):  # no grids
        write_json(metrics, layout.baseline_metrics)
    print(f"[baselines] wrote {layout.baseline_metrics}")


def image_baselines(cfg: dict, layout, backbone, methods, generator, device) -> None:
    """Every method scored by the judge as the plugin is, FID and KID on its features, and a grid per held-out
    combination drawn by each method beside PluGeN."""
    ev, held_out = cfg["evaluate"], cfg["dataset"]["labelled"]["held_out"] or []
    judge = Judge.load(layout.judge).to(device)
    data = read_test_data(cfg, layout, backbone, judge)
    edit_latents, original = data.edit_set(ev["n_manipulation"], device)
    n_fid = min(ev["n_fid"], len(data.samples))
    fid_targets = uniform_targets(judge.schema, n_fid, np.random.default_rng(cfg["seed"] + 1))

    metrics, fakes, grids = {}, {}, {}
    for name, method, fitted_s in methods:
        def generate(targets: pd.DataFrame, n_per_target: int = 1) -> np.ndarray:
            return data.to_samples(method.sample_latents(targets, n_per_target, ev["temperature"], generator)[0])

        edit = (lambda latents, edits: data.to_samples(method.manipulate(latents, edits))) if method.can_edit else None
        # a fresh generator of the same seed: the targets and edits evaluate gave PluGeN
        scores = score_controls(generate, edit, judge.predict, judge.schema, held_out, ev, np.random.default_rng(cfg["seed"]), edit_latents, original)
        start = time.perf_counter()
        fakes[name] = generate(fid_targets)
        scores |= {"time.fit_s": fitted_s, "time.generate_1000_s": (time.perf_counter() - start) * 1000 / n_fid}
        if judge.images:  # latent vectors have no picture
            grids[name] = [generate(pd.DataFrame([combination]), N_GRID) for combination in held_out]
        metrics |= {f"baselines.{name}.{key}": value for key, value in scores.items()}
        print(f"[baselines] {name}: fitted in {fitted_s:.1f}s; generation unseen joint {scores.get('generation.unseen.joint', float('nan')):.3f}, "
              f"manipulation joint {scores.get('manipulation.joint', float('nan')):.3f}")

    extractor = FeatureExtractor(judge).to(device)
    for key, value in fid_kid(extractor, data.samples[:n_fid], fakes, ev["kid_subset_size"], judge.to_input).items():
        kind, name = key.split(".", 1)  # fid.<method>, kid.<method>
        metrics[f"baselines.{name}.{kind}"] = value

    with atomic_dir(layout.baselines) as out:
        if judge.images:
            plugin = PluGeN.load(layout.plugen).to(device)
            grids["plugen"] = [data.to_samples(plugin.sample_latents(pd.DataFrame([c]), N_GRID, ev["temperature"], ev["style_temperature"], generator, extrapolate=True)[0])
                               for c in held_out]
            for i, combination in enumerate(held_out):
                images = np.stack([grids[m][i] for m in grids])
                title = f"{plots.describe(pd.Series(combination))}: never labelled, drawn by each method"
                plots.image_grid(images, list(grids), [], out / f"unseen_{i}.png", title)
        write_json(metrics, layout.baseline_metrics)
    print(f"[baselines] wrote {layout.baseline_metrics} and {layout.baselines}/")


if __name__ == "__main__":
    run_stage(main)
