"""Prompt -> fixed-length int32 token ids, from a tokenizers tokenizer.json (no transformers, no torch)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from t2vtrt.runtime.errors import T2VError

_FIX = "rebuild the model artifact so it contains a valid tokenizer.json"


class PromptTokenizer:
    """Encodes a batch of prompts to (batch, max_length) int32 ids, always padded and truncated."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int) -> None:
        """Wrap a loaded tokenizer; use from_file to load one."""
        self.max_length = max_length
        self.pad_id = pad_id
        # An untruncated twin counts what truncation drops (reconfiguring the shared one is not thread-safe).
        self._full = Tokenizer.from_str(tokenizer.to_str())
        self._full.no_truncation()
        self._full.no_padding()
        self._tok = tokenizer
        # Set both here rather than trusting the file: the manifest's length and pad id are the contract.
        self._tok.enable_truncation(max_length=max_length)
        pad_token = tokenizer.id_to_token(pad_id)
        self._tok.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token, length=max_length)

    @classmethod
    def from_file(cls, path: str | os.PathLike, max_length: int, pad_id: int) -> "PromptTokenizer":
        """Load tokenizer.json; a missing or unreadable file raises T2VError naming it."""
        path = Path(path)
        if not path.is_file():
            raise T2VError(f"tokenizer file {path} does not exist; {_FIX}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for bad JSON or a bad layout
            reason = _first_line(exc)
            raise T2VError(f"tokenizer file {path} is not a valid tokenizers file ({reason}); {_FIX}") from exc
        _check_ids(path, tokenizer, max_length, pad_id)
        return cls(tokenizer, max_length, pad_id)

    def encode(self, prompts: list[str]) -> np.ndarray:
        """Token ids of shape (len(prompts), max_length), dtype int32."""
        return self.encode_with_mask(prompts)[0]

    def encode_with_mask(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and the attention mask (1 for real tokens, 0 for padding), both (len(prompts), max_length) int32."""
        if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
            raise T2VError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        if not prompts:
            raise T2VError("no prompts given; pass at least one prompt (an empty string is allowed)")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise T2VError(f"prompt {bad[0]} is {type(prompts[bad[0]]).__name__}, not a string")
        encodings = self._tok.encode_batch(list(prompts))
        ids = np.array([e.ids for e in encodings], dtype=np.int32)
        return ids, np.array([e.attention_mask for e in encodings], dtype=np.int32)

    def dropped(self, prompts: list[str]) -> list[int]:
        """Per prompt, how many tokens truncation to max_length cuts off (0 when it fits)."""
        return [max(0, len(e.ids) - self.max_length) for e in self._full.encode_batch(list(prompts))]


def _check_ids(path: Path, tokenizer: Tokenizer, max_length: int, pad_id: int) -> None:
    """Reject a length or pad id that this tokenizer cannot honour."""
    vocab_size = tokenizer.get_vocab_size()
    if not 0 <= pad_id < vocab_size:
        raise T2VError(f"pad id {pad_id} is outside the vocabulary (size {vocab_size}) of {path}; {_FIX}")
    # bos + eos need two slots; a shorter length would make every prompt empty.
    if max_length < 2:
        raise T2VError(f"max_length {max_length} for {path} is too small (need >= 2); {_FIX}")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
