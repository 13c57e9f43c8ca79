"""The run folder: its layout, atomic writes, checkpoints, same-run checks, and loading a trained run.

Import the submodules (``runs.layout``, ``runs.atomic``, ``runs.checkpoints``, ``runs.loading``,
``runs.lock``: one writer per folder, ``runs.records``: reading the package's own JSON files)
directly; this package imports nothing so that low layers (data caches) can use ``runs.atomic``.
"""
