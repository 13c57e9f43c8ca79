"""The package's layering, checked statically on the source: every module sits on a floor and imports
only from its own floor or lower ones (the core lowest: it imports nothing above it, neither the config
nor assembly), reading a run never imports the training loop, and no module imports another that
imports it back. docs/architecture.md draws the same floors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import diffusion_curriculum

PACKAGE = Path(diffusion_curriculum.__file__).parent
NAME = "diffusion_curriculum"
CORE = {"schedules", "clustering", "pacing", "weighting", "errors", "distributed", "names"}
TRAINING = {"training", "training.trainer"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The package modules an ``import``/``from ... import`` names (module names relative to the package)."""
    if node.level == 0:
        base = node.module or ""
        if not base.startswith(NAME):
            return []
        base = base[len(NAME) :].lstrip(".")
    else:
        anchor = module.split(".") if module else []
        if not is_package:
            anchor = anchor[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
        base = ".".join([*anchor, *([node.module] if node.module else [])])
    targets = [base] if base else []
    for alias in node.names:  # `from . import checkpoints` names a module
        candidate = f"{base}.{alias.name}" if base else alias.name
        if candidate in MODULES:
            targets.append(candidate)
    return [t for t in targets if t in MODULES]


def _graph() -> dict[str, set[str]]:
    """Every import edge between the package's modules, function-level (lazy) imports included."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                edges.update(_resolve(module, path.name == "__init__.py", node))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(NAME + "."):
                        edges.add(alias.name[len(NAME) + 1 :])
        graph[module] = edges - {module}
    return graph


MODULES = {_module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = _graph()
CORE |= {m for m in MODULES if m == "samplers" or m.startswith("samplers.")}  # the timestep samplers


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# The floors, lowest first: a module imports only from its own floor or lower ones. A module of the package
# that is on no floor fails test_every_module_is_on_a_floor, so a new module must be placed here.
FLOORS: list[tuple[str, set[str]]] = [
    ("core", {"", "errors", "names", "schedules", "clustering", "pacing", "weighting", "distributed", "samplers"}),
    ("utilities", {"atomic", "safe_yaml", "resources", "fault_injection", "interrupts", "progress"}),
    (
        "data, models, objectives, metrics",
        {"objectives", "models", "generation", "visual", "data", "conditioning", "metrics"},
    ),
    ("config", {"config"}),
    ("run folders and launchers", {"runs", "jobs", "slurm"}),
    ("assembly", {"assembly"}),
    ("trained runs and sampling", {"trained", "export", "sampling"}),
    ("evaluation", {"evaluation"}),
    ("training", {"training"}),
    ("experiments and study", {"experiments", "study"}),
    ("command line", {"cli"}),
]


def _floor(module: str) -> int | None:
    """The index into FLOORS of a module (a package's submodules share its floor), None if unplaced."""
    top = module.split(".")[0]
    return next((i for i, (_, members) in enumerate(FLOORS) if top in members), None)


def test_the_graph_sees_imports():
    """The checker itself: known edges are found (so an empty graph cannot pass the tests below)."""
    assert "assembly" in GRAPH["training.trainer"]
    assert "runs.checkpoints" in GRAPH["training.trainer"]
    assert "errors" in GRAPH["samplers.curriculum"]
    assert {"samplers", "samplers.base", "samplers.learning_progress"} <= CORE
    assert "samplers.base" in GRAPH["samplers.learning_progress"]


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_imports_only_the_core(module):
    assert GRAPH[module] <= CORE, f"{module} imports {sorted(GRAPH[module] - CORE)}"


@pytest.mark.parametrize("module", ["evaluation", "sampling", "assembly", "conditioning", "trained"])
def test_reading_runs_never_imports_the_training_loop(module):
    found = _reachable(module) & TRAINING
    assert not found, f"{module} reaches {sorted(found)}"


def test_every_module_is_on_a_floor():
    assert not [m for m in MODULES if _floor(m) is None], "place these modules on a floor of FLOORS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_higher_floor(module):
    mine = _floor(module)
    higher = sorted(f"{m} ({FLOORS[_floor(m)][0]})" for m in GRAPH[module] if _floor(m) > mine)
    assert not higher, f"{module} ({FLOORS[mine][0]}) imports from a higher floor: {higher}"


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_never_imports_the_config_or_assembly(module):
    assert not _reachable(module) & {"config", "assembly"}, f"{module} reaches the config or assembly"


def test_the_floor_check_bites():
    """A made-up edge from the core to the config, and from the run folder to assembly, is a violation."""
    assert _floor("config") > _floor("samplers.curriculum")
    assert _floor("assembly") > _floor("runs.layout")
    assert _floor("atomic") < _floor("config") < _floor("runs.checkpoints")


def test_no_import_cycle():
    for module in GRAPH:
        assert module not in _reachable(module), f"{module} imports itself through {sorted(_reachable(module))}"


def test_info_and_sampling_do_not_load_the_trainer():
    """At run time too: importing evaluation and sampling does not load the training loop (diffusers,
    which the models need, loads Accelerate itself, so that is not checked)."""
    code = (
        "import sys, diffusion_curriculum.evaluation, diffusion_curriculum.sampling, diffusion_curriculum.assembly;"
        "assert 'diffusion_curriculum.training.trainer' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
