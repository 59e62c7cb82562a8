"""Every DVC stage depends on every plugen_core module it imports, directly or through other modules: otherwise
editing that module leaves the stage's outputs stale while `dvc status` says all is up to date."""
import ast
import os
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "plugen_core"


def module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """plugen_core modules a file imports anywhere in it (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {m for m in found if m.split(".")[0] == PACKAGE and module_file(m)}


def import_closure(module: str) -> set[Path]:
    """The files Python runs to import `module`: its own, its packages' __init__.py, and those of what it imports."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            path = module_file(".".join(parts[:i]))
            if path and path not in seen:
                seen.add(path)
                todo += imported_modules(path)
    return {p.relative_to(REPO) for p in seen}


def missing_deps(stages: dict, folder: str = ".") -> dict[str, list[str]]:
    """Per stage of the dvc.yaml in `folder`, the imported plugen_core files that no dep (a file or a folder above it)
    covers."""
    out = {}
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        module = re.search(r"python -m (\S+)", stage["cmd"]).group(1)
        wdir = os.path.join(folder, stage.get("wdir", "."))  # deps are relative to the stage's working directory
        deps = [os.path.normpath(os.path.join(wdir, d)) for d in stage.get("deps", [])]
        missing = sorted(str(f) for f in import_closure(module) if not any(str(f) == d or str(f).startswith(d + "/") for d in deps))
        if missing:
            out[name] = missing
    return out


def stages(folder: str = ".") -> dict:
    return yaml.safe_load((REPO / folder / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("folder", [".", "zoo", "reports"])  # the main pipeline, the pretraining one, the benchmark
def test_every_stage_depends_on_every_module_it_imports(folder):
    assert missing_deps(stages(folder), folder) == {}


def test_a_missing_dependency_is_found():
    broken = stages()
    evaluate = broken["evaluate"]["do"]
    evaluate["deps"] = [d for d in evaluate["deps"] if d != "plugen_core/judge.py"]
    assert "plugen_core/judge.py" in missing_deps({"evaluate": broken["evaluate"]})["evaluate"]
    assert Path("plugen_core/judge.py") in import_closure("plugen_core.stages.align_labels")  # through labelling.py
