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


# -- layers: who may import whom ------------------------------------------------------------------
# The units of the package, each with the units it may import. Anything not listed is forbidden:
# data knows nothing of models, models nothing of agents or reports, nothing below `workflow`
# runs a multi-step job, and only `commands`/`cli` sit above `workflow`.
ALLOWED: dict[str, set[str]] = {
    "data": set(),
    "features": {"data"},
    "simulation": {"data"},
    "agents": {"data", "features", "simulation"},
    "models": {"data", "features"},
    "sampling": {"data", "models"},
    "diagnostics": {"data", "features", "models", "sampling"},
    "reports": {"data", "features", "models", "sampling", "diagnostics"},
    "workflow": {
        "data", "features", "simulation", "agents", "models", "sampling", "diagnostics", "reports",
    },
    "commands": {
        "data", "features", "simulation", "agents", "models", "sampling", "diagnostics",
        "reports", "workflow",
    },
    "cli": {"commands", "data"},
}  # fmt: skip
# Fitting and sampling entry points: only `workflow`, `commands` (and `sampling`, which
# defines them) may import these. Diagnostics and reports are functions of a fit they are given.
FITTERS = {"fit", "least_action", "feature_least_action", "sample"}
NO_FITTING = ("data", "features", "simulation", "agents", "models", "diagnostics", "reports")


def _unit(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import_targets(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names imported from it) for every import in the file, at any depth
    (imports inside functions count: they hide loops, they do not remove them)."""
    tree = ast.parse(path.read_text())
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((name, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
    return out


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement runs: `from pkg import sub` imports pkg.sub."""
    targets = []
    if name in modules:
        targets.append(name)
        targets.extend(f"{name}.{n}" for n in names if f"{name}.{n}" in modules)
    return targets


def test_every_unit_is_given_its_allowed_imports():
    units = {
        _unit(p) for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py"
    }
    assert units == set(ALLOWED), f"units without a layer rule: {sorted(units ^ set(ALLOWED))}"


def test_layers_import_only_downwards():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue  # the package root re-exports (lazily) and is imported by no module
        own = _unit(path)
        for name, _ in _import_targets(path):
            parts = name.split(".")
            if parts[0] != "detailed_balance":
                continue
            if len(parts) == 1:
                offences.append(f"{path.relative_to(ROOT)} imports the package root")
                continue
            other = parts[1]
            if other != own and other not in ALLOWED[own]:
                offences.append(f"{path.relative_to(ROOT)} ({own}) imports {name} ({other})")
    assert not offences, "forbidden directions:\n" + "\n".join(sorted(offences))


def test_nothing_below_workflow_runs_a_fit():
    offences = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py" or _unit(path) not in NO_FITTING:
            continue
        for name, names in _import_targets(path):
            other = name.split(".")[1] if name.startswith("detailed_balance.") else None
            if other not in (None, _unit(path)) and FITTERS & set(names):
                offences.append(f"{path.relative_to(ROOT)} imports {sorted(FITTERS & set(names))}")
            if name.split(".")[0] in {"nutpie"} or (
                _unit(path) in {"diagnostics", "reports"} and name.split(".")[0] == "pymc"
            ):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "fitting below the workflow layer:\n" + "\n".join(sorted(offences))


def test_no_import_loops():
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for name, names in _import_targets(path):
            for target in _resolve(name, names, modules):
                if target != module:
                    graph[module].add(target)
    # a module's package __init__ runs before it: importing your own package's __init__ from a
    # module that __init__ imports is a loop, and the graph sees it as one.
    loops, seen, stack, on_stack = [], set(), [], set()

    def visit(node: str) -> None:
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt in on_stack:
                loops.append(" → ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        on_stack.discard(node)

    for node in sorted(graph):
        if node not in seen:
            visit(node)
    assert not loops, "import loops:\n" + "\n".join(loops[:20])
