"""RDKit as the molecule judge: exact properties of a SMILES (logP, QED, synthetic accessibility, weight), validity,
canonical forms, Morgan-fingerprint similarity and diversity, and FCD (ChemNet weights shipped in fcd_torch's wheel).
An invalid or empty SMILES has no properties (NaN), never a guessed value."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

PROPERTIES = ("logp", "qed", "sas", "mw")
UNITS = {"logp": "Crippen logP", "qed": "QED", "sas": "SA score", "mw": "Da"}


def _quiet() -> None:
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")  # invalid SMILES are expected (and counted), not log lines


def molecule(smiles: str):
    """The RDKit molecule of a SMILES, or None when it is empty or invalid."""
    from rdkit import Chem

    _quiet()
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) and smiles else None
    return mol if mol is not None and mol.GetNumAtoms() > 0 else None


def canonical(smiles) -> np.ndarray:
    """Canonical SMILES of each entry; "" where it is invalid."""
    from rdkit import Chem

    return np.array([Chem.MolToSmiles(m) if (m := molecule(s)) is not None else "" for s in smiles], dtype=str)


def _properties_chunk(smiles: list[str]) -> list[tuple[float, ...]]:
    from rdkit.Chem import QED, Crippen, Descriptors
    from rdkit.Contrib.SA_Score import sascorer

    rows = []
    for s in smiles:
        mol = molecule(s)
        if mol is None:
            rows.append((np.nan,) * len(PROPERTIES))
        else:
            rows.append((Crippen.MolLogP(mol), QED.qed(mol), sascorer.calculateScore(mol), Descriptors.MolWt(mol)))
    return rows


def properties(smiles, workers: int | None = None, chunk: int = 2000) -> pd.DataFrame:
    """logP, QED, SA score and molecular weight per SMILES (NaN for an invalid one). About 2 ms a molecule on one core
    (QED is most of it): large sets are spread over `workers` processes (default: every core)."""
    smiles = [str(s) for s in smiles]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(smiles) <= chunk:
        rows = _properties_chunk(smiles)
    else:
        with ProcessPoolExecutor(workers) as pool:
            rows = [r for part in pool.map(_properties_chunk, [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]) for r in part]
    return pd.DataFrame(rows, columns=list(PROPERTIES)).round(4)


def heavy_atoms(smiles) -> np.ndarray:
    """Heavy-atom count per SMILES (NaN for an invalid one): high validity can hide tiny molecules."""
    return np.array([m.GetNumHeavyAtoms() if (m := molecule(s)) is not None else np.nan for s in smiles], dtype=float)


def fingerprints(smiles) -> list:
    """Morgan fingerprints (radius 2, 2048 bits); None for an invalid SMILES."""
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return [generator.GetFingerprint(m) if (m := molecule(s)) is not None else None for s in smiles]


def tanimoto(a, b) -> np.ndarray:
    """Tanimoto similarity of paired SMILES (0 where either is invalid)."""
    from rdkit import DataStructs

    return np.array([DataStructs.TanimotoSimilarity(x, y) if x is not None and y is not None else 0.0 for x, y in zip(fingerprints(a), fingerprints(b))])


def internal_diversity(smiles) -> float:
    """MOSES's IntDiv1: 1 - mean pairwise Tanimoto similarity among the valid molecules."""
    from rdkit import DataStructs

    fps = [f for f in fingerprints(smiles) if f is not None]
    if len(fps) < 2:
        return float("nan")
    sims = [DataStructs.BulkTanimotoSimilarity(f, fps) for f in fps]
    return float(1 - np.mean(sims))


def fcd(reference, generated: dict[str, np.ndarray], device: str = "cpu") -> dict[str, float]:
    """Fréchet ChemNet Distance of each set's valid SMILES to the reference set, whose ChemNet statistics are computed
    once (ChemNet's weights ship in the fcd_torch wheel); NaN for a set with fewer than 2 valid molecules."""
    from fcd_torch import FCD

    scorer = FCD(device=device, n_jobs=1)
    ref = scorer.precalc(list(reference))
    out = {}
    for name, smiles in generated.items():
        valid = [s for s in smiles if molecule(s) is not None]
        out[name] = float(scorer.metric(ref, scorer.precalc(valid))) if len(valid) >= 2 else float("nan")
    return out

def draw_grid(smiles, legends: list[str], per_row: int, path, title: str) -> None:
    """RDKit drawings of molecules in rows of `per_row`, each with its legend ("" draws an empty cell: no molecule)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rdkit.Chem import Draw

    from plugen_core.io import atomic_path

    image = Draw.MolsToGridImage([molecule(s) for s in smiles], molsPerRow=per_row, subImgSize=(220, 180), legends=legends)
    fig, ax = plt.subplots(figsize=(image.width / 110, image.height / 110 + 0.4))
    ax.imshow(np.asarray(image))
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
