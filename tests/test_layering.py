"""The import rules of ARCHITECTURE.md, read from the source: packages import only down their table, and sr_model's
subpackages only down theirs, so that no import circle can form between the parts of the project."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: package -> the project packages it may import (ARCHITECTURE.md, "Packages and who imports whom")
PACKAGES = {
    "gaussian_field": set(),
    "prior_store": set(),
    "dgp_fitting": {"gaussian_field", "prior_store"},
    "sr_model": {"gaussian_field", "prior_store"},
    "workflows": {"gaussian_field", "prior_store", "dgp_fitting", "sr_model"},
}
#: sr_model's parts, each floor importing only the floors below it (ARCHITECTURE.md, "sr_model's parts")
SR_MODEL_FLOORS = [
    {"networks", "data", "weights"},
    {"files", "inference"},
    {"evaluation"},
    {"training"},
    {"api"},
]


def project_imports(path: Path) -> list[str]:
    """Dotted names of the project modules `path` imports (at module level or inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.split(".")[0] in PACKAGES]


def part_of(module: str) -> str:
    """sr_model's part a dotted name belongs to (`sr_model.training.loop` -> training)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def floor(part: str) -> int:
    return next(i for i, parts in enumerate(SR_MODEL_FLOORS) if part in parts)


def test_packages_import_only_down_the_table():
    wrong = []
    for package, allowed in PACKAGES.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in project_imports(path):
                top = name.split(".")[0]
                if top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_sr_model_parts_import_only_down_their_floors():
    wrong, unknown = [], []
    for path in sorted((ROOT / "sr_model").rglob("*.py")):
        relative = path.relative_to(ROOT / "sr_model")
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        if not any(own in parts for parts in SR_MODEL_FLOORS):
            unknown.append(str(relative))
            continue
        for name in project_imports(path):
            other = part_of(name)
            if name.startswith("sr_model") and other and other != own and any(other in p for p in SR_MODEL_FLOORS):
                if floor(other) >= floor(own):
                    wrong.append(f"sr_model/{relative} ({own}) imports {name} ({other})")
    assert not unknown, f"modules outside sr_model's parts: {unknown}"
    assert not wrong, "\n".join(wrong)


def test_the_rules_catch_an_upward_import(tmp_path):
    """The check above can fail: an sr_model network importing training is found."""
    module = tmp_path / "model.py"
    module.write_text("from sr_model.training.loop import train\n")
    assert [part_of(name) for name in project_imports(module)] == ["training", "training"]
    assert floor("training") > floor("networks")
