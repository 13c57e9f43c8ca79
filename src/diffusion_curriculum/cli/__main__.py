"""``python -m diffusion_curriculum.cli``: the ``diffusion-curriculum`` command (as Slurm jobs and torchrun run it)."""

import sys

from . import main

sys.exit(main())
