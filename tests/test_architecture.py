"""ARCHITECTURE.md stays true: the module map matches the package, and subpackages talk only
through each other's public APIs (no imports of another subpackage's underscore modules)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "detailed_balance"


def _mapped_paths() -> set[str]:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("<!-- section: map -->")[1].split("<!-- /section: map -->")[0]
    return set(re.findall(r"`(detailed_balance/[\w/.]*)`", section))


def test_every_module_is_on_the_map_and_every_mapped_path_exists():
    mapped = _mapped_paths()
    for path in mapped:
        assert (ROOT / path).exists(), f"ARCHITECTURE.md maps {path}, which does not exist"
    parts = {
        f"detailed_balance/{p.name}/" if p.is_dir() else f"detailed_balance/{p.name}"
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    }
    missing = sorted(parts - mapped)
    assert not missing, f"add these to the map in ARCHITECTURE.md: {missing}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # resolve a relative import against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_reaching_into_another_subpackages_private_modules():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0]
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "detailed_balance" or len(parts) < 3:
                continue
            if parts[1] != own and any(p.startswith("_") for p in parts[2:]):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)
