"""Data layer: built-in and user datasets, the seeded split, digit captions and caption embeddings.

``load_dataset`` returns a :class:`DatasetBundle`; ``GaussianMixture`` gives the ``gmm`` dataset's
exact density, score and optimal denoiser; ``TextEncoder`` turns captions into token embeddings.
"""

from ..errors import DataError
from .builtin import BUILTIN_DATASETS, TOY2D_DATASETS
from .bundle import DatasetBundle, split_indices
from .captions import CAPTION_TEMPLATES, DIGIT_WORDS, HELDOUT_TEMPLATES, TRAIN_TEMPLATES, caption_for
from .files import IMAGE_EXTENSIONS
from .gmm import GaussianMixture, default_gmm
from .loading import load_dataset
from .text import TextEncoder, unique_caption_table

__all__ = [
    "BUILTIN_DATASETS",
    "CAPTION_TEMPLATES",
    "DIGIT_WORDS",
    "HELDOUT_TEMPLATES",
    "IMAGE_EXTENSIONS",
    "TOY2D_DATASETS",
    "TRAIN_TEMPLATES",
    "DataError",
    "DatasetBundle",
    "GaussianMixture",
    "TextEncoder",
    "caption_for",
    "default_gmm",
    "load_dataset",
    "split_indices",
    "unique_caption_table",
]
