"""RDKit as the molecule judge: exact properties of a SMILES (logP, QED, synthetic accessibility, weight), validity,
canonical forms, Morgan-fingerprint similarity and diversity, and FCD (ChemNet weights shipped in fcd_torch's wheel).
An invalid or empty SMILES has no properties (NaN), never a guessed value."""
from __future__ import annotations

import math
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

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


_pools: dict[int, ProcessPoolExecutor] = {}  # per worker count; kept between calls, since a fresh worker spends
                                            # 0.4 s loading the SA scorer's tables (it doubled each call's time)


def in_parallel(work, items: list, least: int = 64) -> list:
    """`work(items)` (a top-level function of a list returning one result per item), split over as many processes
    as this stage has torch threads (plugen_core/threads.py) once there are `least` items: RDKit and SELFIES are
    pure Python or single-threaded C++, so a stage's second core would otherwise sit idle while they run (2 cores:
    1,000 molecules' properties in 0.7 s instead of 1.4 s). Called from any thread but the main one (a request of the
    `plugen demo` server), it stays in this process: forking from a threaded process can copy a lock another thread
    holds into the workers, which would then wait on it for ever."""
    import torch

    workers = torch.get_num_threads()
    if workers == 1 or len(items) < least or threading.current_thread() is not threading.main_thread():
        return work(items)
    share = math.ceil(len(items) / workers)
    parts = [items[i : i + share] for i in range(0, len(items), share)]
    for fresh in (False, True):
        try:
            return [r for part in _pool(workers).map(work, parts) for r in part]
        except BrokenProcessPool:  # a worker was killed (out of memory, a crash): a fresh pool, once, not a dead one for good
            if fresh:
                raise
            _pools.pop(workers).shutdown(wait=False)


def _pool(workers: int) -> ProcessPoolExecutor:
    if workers not in _pools:
        _pools[workers] = ProcessPoolExecutor(workers)
    return _pools[workers]


def _canonical_chunk(smiles: list[str]) -> list[str]:
    from rdkit import Chem

    return [Chem.MolToSmiles(m) if (m := molecule(s)) is not None else "" for s in smiles]


def canonical(smiles) -> np.ndarray:
    """Canonical SMILES of each entry; "" where it is invalid."""
    return np.array(in_parallel(_canonical_chunk, [str(s) for s in smiles]), dtype=str)


def _selfies_chunk(smiles: list[str]) -> list[tuple[str, str]]:
    import selfies as sf

    out = []
    for s, written in zip(smiles, _canonical_chunk(smiles)):
        try:
            out.append((sf.encoder(written or s, strict=False), ""))
        except sf.EncoderError as e:
            out.append(("", str(e)))
    return out


def selfies_of(smiles) -> list[str]:
    """The SELFIES of each SMILES's canonical form (a molecule VAE learnt canonical SMILES: the same molecule written
    another way read back 0.5% exactly instead of 49%); a SMILES that SELFIES cannot encode is an error naming its row
    and value as given."""
    from plugen_core.io import PlugenInputError

    encoded = in_parallel(_selfies_chunk, [str(s) for s in smiles])
    for row, (s, (_, error)) in enumerate(zip(smiles, encoded)):
        if error:
            raise PlugenInputError(f"row {row}: SMILES {str(s)!r} cannot be written as SELFIES ({error})")
    return [e for e, _ in encoded]


def _smiles_chunk(words: list[str]) -> list[str]:
    import selfies as sf

    return _canonical_chunk([sf.decoder(w) or "" for w in words])


def smiles_of_selfies(words) -> np.ndarray:
    """The canonical SMILES each SELFIES decodes to ("" for one that decodes to no molecule)."""
    return np.array(in_parallel(_smiles_chunk, list(words)), dtype=str)


def _properties_chunk(smiles: list[str]) -> list[tuple[float, ...]]:
    from rdkit.Chem import QED
    from rdkit.Contrib.SA_Score import sascorer

    rows = []
    for s in smiles:
        mol = molecule(s)
        if mol is None:
            rows.append((np.nan,) * len(PROPERTIES))
        else:  # QED's inputs include Crippen's logP and the weight, the very same numbers: computed once, not twice
            inputs = QED.properties(mol)
            rows.append((inputs.ALOGP, QED.qed(mol, qedProperties=inputs), sascorer.calculateScore(mol), inputs.MW))
    return rows


def properties(smiles) -> pd.DataFrame:
    """logP, QED, SA score and molecular weight per SMILES (NaN for an invalid one). About 2 ms a molecule on one core
    (QED is most of it)."""
    return pd.DataFrame(in_parallel(_properties_chunk, [str(s) for s in smiles]), columns=list(PROPERTIES)).round(4)


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
