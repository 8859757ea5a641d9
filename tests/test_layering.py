"""The layering of docs/architecture.md, checked on the code: imports point down only, engines
never import each other, the site writers and the task core stay torch-free."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vizsuite"

RANK = {"errors": 0, "fileio": 0, "hashing": 0, "images": 0, "memory": 0, "kernels": 0, "limits": 0, "display": 0, "__init__": 0, "__main__": 7,
        "zoo": 1, "units": 2, "targets": 2, "hooks": 2, "capture": 2, "stream": 2,
        "optvis": 3, "attribution": 3, "analysis": 3, "interventions": 3, "dictionary": 3, "describe": 3,
        "concepts": 3, "tasks": 4, "gallery": 5, "atlas": 5, "cli": 6}
ENGINES = {"optvis", "attribution", "analysis", "interventions", "dictionary", "describe", "concepts"}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    here = ".".join(rel.parts)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            else:
                names = [node.module]
            yield from names
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        yield path, ".".join(rel.parts)


def test_imports_point_down_and_engines_are_siblings():
    bad = []
    for path, name in _modules():
        own = _part(name)
        for target in _imports(path):
            if not target.startswith("vizsuite"):
                continue
            other = _part(target) if target != "vizsuite" else "__init__"
            if other not in RANK and not (PKG / other).exists() and not (PKG / f"{other}.py").exists():
                other = "__init__"  # a name from the package itself (__version__)
            if other == own:
                continue
            if RANK[other] > RANK[own]:
                bad.append(f"{name} imports {target} (up: {own} -> {other})")
            elif own in ENGINES and other in ENGINES:
                bad.append(f"{name} imports {target} (engines never import each other)")
    assert not bad, "\n".join(bad)


def test_site_writers_and_task_core_are_torch_free():
    torch_free = ["vizsuite/gallery/site.py", "vizsuite/gallery/pages.py", "vizsuite/atlas/pages.py",
                  "vizsuite/tasks/core.py", "vizsuite/tasks/store.py", "vizsuite/tasks/results.py",
                  "vizsuite/tasks/codec.py", "vizsuite/hashing.py"]
    for rel in torch_free:
        path = PKG.parent / rel
        mods = [m for m in _imports(path) if m.split(".")[0] in ("torch", "torchvision", "timm")]
        if rel == "vizsuite/hashing.py":  # only model_fingerprint imports torch, lazily
            src = path.read_text("utf-8")
            assert src.count("import torch") == 1 and "\nimport torch" not in src
            continue
        assert not mods, f"{rel} imports {mods}"
