"""The run folder: its layout and the rules for starting, replacing and resuming a run, checkpoints,
one writer per folder, and reading the package's own JSON files.

Import the submodules directly (``runs.layout``, ``runs.checkpoints``, ``runs.lock``, ``runs.records``).
This floor sits above the config and below assembly: loading a trained run, which builds the run's
objective and model, is :mod:`~diffusion_curriculum.trained`, above it, and the one atomic writer that
lower floors (config, data caches, metrics) use too is :mod:`~diffusion_curriculum.atomic`, below it.
"""
