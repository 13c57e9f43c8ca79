"""Conditioning: class labels or captions, their dropout for classifier-free guidance, and the
conditional / unconditional model inputs for sampling. One implementation for training, sampling
and evaluation, so that the "null" input a model learned is the one it is guided against.

A class-conditional model's null input is the label ``n_classes`` (one past the real labels); a
text-conditional model's is the empty caption. Classifier-free guidance: Ho & Salimans, 2022,
arXiv 2207.12598.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .data.bundle import DatasetBundle
from .data.captions import HELDOUT_TEMPLATES, caption_for
from .errors import ConfigError, UserError

__all__ = ["Conditioner", "TrainingConditions"]

Cond = dict[str, Tensor] | None


@dataclass
class Conditioner:
    """How one run's model is conditioned: ``kind`` is ``none``, ``class`` or ``text``;
    ``n_classes`` the number of real labels (the null label is ``n_classes``); ``text_encoder`` the
    encoder's model directory (None: the bundled MiniLM); ``cache_dir`` where caption encodings are kept."""

    kind: str
    n_classes: int = 0
    text_encoder: str | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self._encoder = None

    @property
    def encoder(self):
        """The text encoder, loaded on first use (transformers is slow to import)."""
        if self._encoder is None:
            from .data.text import TextEncoder

            self._encoder = TextEncoder(self.text_encoder, cache_dir=self.cache_dir)
        return self._encoder

    def encode_text(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Hidden states and masks of ``captions``, padded to one length (cached when ``cache_dir`` is set)."""
        return self.encoder.encode_cached(list(captions))

    # ----- inputs for sampling ------------------------------------------------------------------
    def for_labels(self, labels: Tensor, device: torch.device | str) -> tuple[Cond, Cond]:
        """Conditional and null inputs for one label per sample; text models get the label's caption in
        the held-out templates (sample i in template i mod their number), phrasings training never saw."""
        if self.kind == "none":
            return None, None
        if self.kind == "class":
            labels = labels.to(device)
            return {"class_labels": labels}, {"class_labels": torch.full_like(labels, self.n_classes)}
        prompts = [caption_for(int(k), HELDOUT_TEMPLATES[i % len(HELDOUT_TEMPLATES)]) for i, k in enumerate(labels)]
        return self.for_prompts(prompts, device)

    def for_prompts(self, prompts: Sequence[str], device: torch.device | str) -> tuple[Cond, Cond]:
        """Conditional inputs for one caption per sample and the empty caption as the null input."""
        n = len(prompts)
        hidden, mask = self.encode_text([*prompts, ""])  # encoded together: one padded length
        cond = {"encoder_hidden_states": hidden[:n], "encoder_attention_mask": mask[:n]}
        uncond = {
            "encoder_hidden_states": hidden[n:].expand(n, -1, -1),
            "encoder_attention_mask": mask[n:].expand(n, -1),
        }
        return _to(cond, device), _to(uncond, device)

    def for_request(
        self, n: int, label: int | None, prompt: str | None, device: torch.device | str
    ) -> tuple[Cond, Cond]:
        """What ``diffusion-curriculum sample`` asked for: a label, a prompt, or (class models) every label in turn."""
        if self.kind == "none":
            if label is not None or prompt is not None:
                raise UserError("this model is unconditional: --label and --prompt do not apply")
            return None, None
        if self.kind == "class":
            if prompt is not None:
                raise UserError("this model is class-conditional: use --label, not --prompt")
            if label is not None and not 0 <= label < self.n_classes:
                raise UserError(f"--label {label}: this model knows labels 0..{self.n_classes - 1}")
            every = torch.arange(n) % self.n_classes
            labels = every if label is None else torch.full((n,), label, dtype=torch.long)
            return self.for_labels(labels, device)
        if label is not None:
            raise UserError("this model is text-conditional: use --prompt, not --label")
        if prompt is None:
            raise UserError("this model is text-conditional: give --prompt")
        return self.for_prompts([prompt] * n, device)

    def for_items(self, labels: Tensor | None, captions: Sequence[str] | None, device: torch.device | str) -> Cond:
        """The conditional input of given data items (their own labels or captions), e.g. held-out data."""
        if self.kind == "class" and labels is not None:
            return {"class_labels": labels.to(device)}
        if self.kind == "text" and captions is not None:
            hidden, mask = self.encode_text(captions)
            return _to({"encoder_hidden_states": hidden, "encoder_attention_mask": mask}, device)
        return None


class TrainingConditions:
    """Per-item conditioning of a training set kept on the device, dropped to the null input with a
    probability for classifier-free guidance. Captions are encoded once, as a table of unique captions
    (plus the empty caption as its last row), and looked up by index per batch."""

    def __init__(self, conditioner: Conditioner, data: DatasetBundle, dataset: str, device: torch.device | str) -> None:
        self.kind = conditioner.kind
        self.ids: Tensor | None = None
        self.null_index = 0
        self.table_hidden: Tensor | None = None
        self.table_mask: Tensor | None = None
        if self.kind == "class":
            if data.train_labels is None:
                raise ConfigError(f"model.conditioning: data set {dataset!r} has no class labels")
            self.ids, self.null_index = data.train_labels.to(device), conditioner.n_classes
        elif self.kind == "text":
            if data.train_captions is None:
                raise ConfigError(f"model.conditioning: data set {dataset!r} has no captions")
            from .data.text import unique_caption_table

            unique, index = unique_caption_table(data.train_captions)
            hidden, mask = conditioner.encode_text([*unique, ""])
            self.ids, self.null_index = index.to(device), len(unique)
            self.table_hidden, self.table_mask = hidden.to(device), mask.to(device)

    def batch(self, idx: Tensor, drop: Tensor | None) -> Cond:
        """The model input for training items ``idx``; items where ``drop`` is true get the null input."""
        if self.kind == "none":
            return None
        ids = self.ids[idx]
        if drop is not None:
            ids = torch.where(drop, torch.full_like(ids, self.null_index), ids)
        if self.kind == "class":
            return {"class_labels": ids}
        return {"encoder_hidden_states": self.table_hidden[ids], "encoder_attention_mask": self.table_mask[ids]}


def _to(cond: dict[str, Tensor], device: torch.device | str) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in cond.items()}
