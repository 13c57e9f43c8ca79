"""Caption templates for the digit datasets, with a held-out set of templates for evaluation.

Training items are captioned from :data:`TRAIN_TEMPLATES` only and held-out items from
:data:`HELDOUT_TEMPLATES` only, so a text-conditional model can be tested on phrasings it never
saw, e.g. ``caption_for(7, HELDOUT_TEMPLATES[0])``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError

__all__ = [
    "CAPTION_TEMPLATES",
    "DIGIT_WORDS",
    "HELDOUT_TEMPLATES",
    "TRAIN_TEMPLATES",
    "caption_for",
    "digit_captions",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

CAPTION_TEMPLATES = (
    "a handwritten {word}",
    "the digit {digit} written in pen",
    "a picture of the number {word}",
    "{word}, handwritten",
    "a scanned digit {digit}",
    "an image of a {word}",
    "a drawing of the numeral {digit}",
    "someone wrote the number {word}",
)
TRAIN_TEMPLATES = CAPTION_TEMPLATES[:-2]
HELDOUT_TEMPLATES = CAPTION_TEMPLATES[-2:]

_CAPTION_SEED_OFFSET = 0x5EED  # keeps the template draws apart from the split's stream of the same seed


def caption_for(label: int, template: str) -> str:
    """The caption of digit ``label`` (0-9) in ``template`` (``{word}`` -> "seven", ``{digit}`` -> "7")."""
    label = int(label)
    if not 0 <= label < len(DIGIT_WORDS):
        raise UserError(f"digit label must lie in 0..9, got {label}")
    return template.format(word=DIGIT_WORDS[label], digit=label)


def digit_captions(train_labels: Tensor, heldout_labels: Tensor, seed: int) -> tuple[list[str], list[str]]:
    """Caption each item from its split's templates, the template drawn per item from ``seed``."""
    g = torch.Generator().manual_seed(int(seed) + _CAPTION_SEED_OFFSET)
    out = []
    for labels, templates in ((train_labels, TRAIN_TEMPLATES), (heldout_labels, HELDOUT_TEMPLATES)):
        choice = torch.randint(len(templates), (labels.numel(),), generator=g)
        out.append([caption_for(y, templates[c]) for y, c in zip(labels.tolist(), choice.tolist(), strict=True)])
    return out[0], out[1]
