"""PromptTokenizer: fixed-shape int32 ids from tokenizer.json, and one-line T2VErrors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from t2vtrt.runtime.errors import T2VError
from t2vtrt.runtime.tokenizer import PromptTokenizer

BOS, EOS = 49406, 49407


@pytest.fixture(scope="session")
def clip_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CLIP tokenizer.json, written once per session by the build stage."""
    from t2vtrt.build.clip_tokenizer import write_clip_tokenizer

    return write_clip_tokenizer(tmp_path_factory.mktemp("clip_tok") / "tokenizer.json")


@pytest.fixture()
def tok(clip_json: Path) -> PromptTokenizer:
    """Loaded as a runtime would: length 77, pad = eos."""
    return PromptTokenizer.from_file(clip_json, max_length=77, pad_id=EOS)


def test_shape_dtype_and_known_ids(tok: PromptTokenizer) -> None:
    """(batch, 77) int32, bos first, eos after the words, eos padding."""
    ids = tok.encode(["a photo of a cat", ""])
    assert ids.shape == (2, 77) and ids.dtype == np.int32
    assert ids[0, :7].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert (ids[0, 7:] == EOS).all()
    assert ids[1].tolist() == [BOS] + [EOS] * 76


def test_truncation_keeps_eos(tok: PromptTokenizer) -> None:
    """A long prompt fills all 77 slots and still ends with eos."""
    ids = tok.encode(["word " * 300, "short"])
    assert ids.shape == (2, 77)
    assert ids[0, 0] == BOS and ids[0, -1] == EOS and EOS not in ids[0, 1:-1]


def test_custom_pad_and_length(clip_json: Path) -> None:
    """The caller's length and pad id win over what the file stores (e.g. OpenCLIP-style pad 0)."""
    tok = PromptTokenizer.from_file(str(clip_json), max_length=10, pad_id=0)
    ids = tok.encode(["a cat"])
    assert ids.tolist() == [[BOS, 320, 2368, EOS, 0, 0, 0, 0, 0, 0]]
    assert tok.encode(["word " * 50])[0, -1] == EOS


def test_batch_is_independent_of_neighbours(tok: PromptTokenizer) -> None:
    """Each row equals that prompt encoded alone (no longest-in-batch padding)."""
    prompts = ["x", "a much longer prompt about a dog on a skateboard", ""]
    batch = tok.encode(prompts)
    for row, prompt in zip(batch, prompts):
        assert row.tolist() == tok.encode([prompt])[0].tolist()


def test_tuple_accepted(tok: PromptTokenizer) -> None:
    """A tuple of prompts works like a list."""
    assert tok.encode(("a", "b")).shape == (2, 77)


@pytest.mark.parametrize("bad", [[], "a bare string", None, ["ok", 3]])
def test_bad_prompts_raise(tok: PromptTokenizer, bad) -> None:
    """Empty list, a bare string, or a non-string item: T2VError, one line."""
    with pytest.raises(T2VError) as info:
        tok.encode(bad)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    """The error names the file and the fix."""
    path = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(T2VError, match=r"nope.tokenizer\.json does not exist; rebuild") as info:
        PromptTokenizer.from_file(path, max_length=77, pad_id=EOS)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", ["{not json", "{}", "", '{"model": {"type": "Nope"}}'])
def test_malformed_file(tmp_path: Path, content: str) -> None:
    """Bad JSON or a non-tokenizer JSON: T2VError naming the file, one line."""
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(T2VError, match=r"tokenizer\.json is not a valid tokenizers file") as info:
        PromptTokenizer.from_file(path, max_length=77, pad_id=EOS)
    assert "\n" not in str(info.value) and "rebuild" in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A folder path is reported like a missing file."""
    with pytest.raises(T2VError, match="does not exist"):
        PromptTokenizer.from_file(tmp_path, max_length=77, pad_id=EOS)


@pytest.mark.parametrize(("max_length", "pad_id"), [(1, EOS), (77, 49408), (77, -1)])
def test_bad_length_or_pad(clip_json: Path, max_length: int, pad_id: int) -> None:
    """A length too short for bos+eos, or a pad id outside the vocab, is refused up front."""
    with pytest.raises(T2VError):
        PromptTokenizer.from_file(clip_json, max_length=max_length, pad_id=pad_id)


def test_runtime_module_imports_no_torch_or_transformers() -> None:
    """The runtime tokenizer must work in a service with neither installed."""
    code = (
        "import sys; import t2vtrt.runtime.tokenizer; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
