"""The benchmark report: its tables per experiment, and its label-efficiency section, on known scores."""
import pandas as pd

from plugen_core.stages.report import efficiency, efficiency_section, markdown, table


def runs() -> pd.DataFrame:
    rows = [("plugen", True, n, seed, 0.5 + n / 1000 + seed / 100) for n in (100, 200) for seed in (0, 1)]
    rows += [("plugen", False, n, seed, 0.2) for n in (100, 200) for seed in (0, 1)] + [("lace", True, 100, 0, 0.9), ("lace", True, 200, 0, 0.1)]
    rows += [("rejection", True, n, 0, 0.05) for n in (100, 200)]
    frame = pd.DataFrame(rows, columns=["method", "unlabelled", "labelled", "seed", "generation.unseen.joint"])
    return frame.assign(**{"manipulation.joint": frame["generation.unseen.joint"].where(frame["method"] != "rejection") / 2})  # it does not edit


def test_efficiency_averages_seeds_per_method_and_size():
    stats = efficiency(runs(), "generation.unseen.joint")
    assert stats.loc[("plugen", 100), "mean"] == 0.605 and (stats.loc[("plugen", 100), "min"], stats.loc[("plugen", 100), "max"]) == (0.6, 0.61)
    assert stats.loc[("plugen (labelled latents only)", 200), "mean"] == 0.2  # its own series, not averaged into PluGeN's


def test_efficiency_section_marks_the_best_per_size_and_draws_curves(tmp_path):
    lines = efficiency_section("shapes-vae", runs(), tmp_path)
    table = [line for line in lines if line.startswith("| generation.unseen.joint")][0].splitlines()
    assert table[0] == "| generation.unseen.joint by labelled samples | 100 | 200 |"
    assert "| lace | **0.900** (0.90-0.90) | 0.100 (0.10-0.10) |" in table
    assert "| plugen | 0.605 (0.60-0.61) | **0.705** (0.70-0.71) |" in table
    assert "--sizes 100,200 --seeds 0,1" in "\n".join(lines)
    manipulation = next(line for line in lines if line.startswith("| manipulation.joint"))
    assert any(row.startswith("| rejection |") for row in table) and "| rejection |" not in manipulation  # it does not edit
    assert (tmp_path / "shapes-vae_efficiency_manipulation.joint.png").stat().st_size > 1000


def test_a_molecule_experiment_is_tabled_by_its_rdkit_scores_and_the_best_is_bold():
    plugen = {"judge.space": "rdkit", "generation.unseen.joint": 0.2, "target.mae_fraction": 0.3, "fcd.plugen_samples": 19.0, "time.train_flow_s": 20.0}
    baselines = {"baselines.lace.generation.unseen.joint": 0.4, "baselines.lace.target.mae_fraction": 0.25, "baselines.lace.fcd": 21.0,
                 "baselines.rejection.generation.unseen.joint": 0.3}
    frame = table(plugen, baselines)
    assert list(frame.index) == ["plugen", "lace", "rejection"] and "fid" not in frame and "manipulation.tanimoto_median" in frame
    assert frame.loc["plugen", "fcd"] == 19.0 and frame.loc["plugen", "time.fit_s"] == 20.0  # PluGeN's own key names
    rows = {line.split(" | ")[0][2:]: line for line in markdown(frame).splitlines()[2:]}
    assert "**0.400**" in rows["lace"] and "**0.250**" in rows["lace"] and "**19.000**" in rows["plugen"]  # higher / lower is better
    assert "fid" in table({"generation.unseen.joint": 0.9}, {}) and "fcd" not in table({"generation.unseen.joint": 0.9}, {})  # an image experiment's
