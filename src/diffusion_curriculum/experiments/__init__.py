"""The comparison experiment: grids of runs (methods x weightings x seeds), their evaluation and report."""

from .grid import PRESETS, GridConfig, RunSpec, load_grid, preset_path
from .runner import run_grid

__all__ = ["PRESETS", "GridConfig", "RunSpec", "load_grid", "preset_path", "run_grid"]
