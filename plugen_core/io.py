"""Small I/O helpers shared by every stage: params, devices, atomic writes, checkpoints."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
import yaml


class PlugenInputError(ValueError):
    """Bad user input: a missing file, an unknown attribute, a wrong value. The message names it."""


class _ParamsLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-05` (how `dvc exp run -S flow.lr=1e-5` writes it) as a string: read it as a float."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise PlugenInputError(f"{path}: params file not found")
    try:
        with path.open() as f:
            params = yaml.load(f, Loader=_ParamsLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise PlugenInputError(f"{path}: not valid YAML ({yaml_problem(e)})") from e
    if not isinstance(params, dict):
        raise PlugenInputError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    return params


def yaml_problem(error: Exception) -> str:
    """A YAML error in one line: what is wrong and where (its own text spreads the context over four lines)."""
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return first_line(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"


def first_line(error: Exception) -> str:
    """An exception's message cut to its first line (torch's and MLflow's run to paragraphs of advice)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise PlugenInputError(f"params: section '{name}' is missing")
    return params[name]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PlugenInputError(f"device '{name}' requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(name)


def inference_batch(device: torch.device | str) -> int:
    """Rows per forward pass without gradients. Small on a CPU, where a large batch's activations are fresh large
    allocations whose page faults cost more than their arithmetic (measured on 2 cores: 64 rows decoded the GAN 2.3x
    and ran the judge 2.5x faster than 1,024 and 512); large on a GPU, where each launch should carry more work."""
    return 1024 if torch.device(device).type == "cuda" else 64


def require_file(path: str | Path, what: str = "input") -> Path:
    path = Path(path)
    if not path.is_file():
        raise PlugenInputError(f"{path}: {what} file not found")
    return path


def _umask_mode(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(_umask_mode(0o666))  # mkstemp makes it private; an output is as readable as any file the user writes
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; it replaces `path` (and all it held) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(_umask_mode(0o777))
    try:
        yield tmp
        old = path.with_name(f"{tmp.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def file_digest(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file, read in blocks (md5 as DVC records it, sha256 as model cards do)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    path = require_file(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PlugenInputError(f"{path}: not valid JSON ({e})") from e


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        if Path(path).suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    path = require_file(path, "table")
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as e:  # pandas/pyarrow raise many types for a broken file
        raise PlugenInputError(f"{path}: cannot read table ({e})") from e


def write_together(writers: dict[Path, Callable[[Path], object]]) -> None:
    """Write several files so that a failure leaves none of them: each writer fills a temporary file beside its path,
    and all are renamed into place only once every one is written."""
    with contextlib.ExitStack() as stack:
        for path, write in writers.items():
            write(stack.enter_context(atomic_path(path)))


def save_npy(array: np.ndarray, path: Path) -> None:
    with path.open("wb") as f:  # a file object: np.save would add ".npy" to the name of a temporary file
        np.save(f, array)


def write_array(array: np.ndarray, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_npy(array, tmp)


def read_array(path: str | Path) -> np.ndarray:
    path = require_file(path, "array")
    try:
        if path.suffix.lower() == ".pt":
            return torch.load(path, map_location="cpu", weights_only=True).numpy()
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise PlugenInputError(f"{path}: cannot read array ({e})") from e


def save_checkpoint(obj: dict, path: str | Path) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)  # to a file object: a path would name the archive after the random temp name, so equal
        # checkpoints would differ byte for byte (and DVC would see a changed output)


def load_checkpoint(path: str | Path, required_keys: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint of plain tensors and containers; never unpickle arbitrary objects."""
    path = require_file(path, "checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
        raise PlugenInputError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__}: {first_line(e)})") from e
    if not isinstance(ckpt, dict):
        raise PlugenInputError(f"{path}: checkpoint must hold a dict, got {type(ckpt).__name__}")
    missing = [k for k in required_keys if k not in ckpt]
    if missing:
        raise PlugenInputError(f"{path}: checkpoint lacks keys {missing}")
    return ckpt


def run_stage(main: Callable[[], None]) -> None:
    """Entry point wrapper: bad input ends the stage with its message and exit code 2, no traceback."""
    try:
        main()
    except PlugenInputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def seed_everything(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
