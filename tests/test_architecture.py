"""The package's layering, checked statically on the source: the core imports nothing above it,
reading a run never imports the training loop, and no module imports another that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import diffusion_curriculum

PACKAGE = Path(diffusion_curriculum.__file__).parent
NAME = "diffusion_curriculum"
CORE = {"schedules", "clustering", "pacing", "weighting", "errors", "distributed"}
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
