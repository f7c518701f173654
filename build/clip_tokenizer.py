"""The real CLIP BPE tokenizer (openai/clip-vit-large-patch14), built offline from the vendored merges file."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from t2vtrt.runtime.files import atomic_path

DEFAULT_BPE = Path(__file__).resolve().parent / "data" / "bpe_simple_vocab_16e6.txt.gz"

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
VOCAB_SIZE = 49408
BOS_ID = 49406
EOS_ID = 49407
# OpenAI CLIP keeps the first 49152 - 256 - 2 merges of the file (after its version line), so that
# 256 bytes x 2 (plain and </w>) + merges + 2 specials make exactly 49408 tokens.
N_MERGES = 49152 - 256 - 2

# transformers' CLIP split: specials, English contractions, letter runs, single digits, punctuation runs.
SPLIT_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode char table, in its canonical order."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_merges(bpe_gz: Path = DEFAULT_BPE) -> list[tuple[str, str]]:
    """The merges CLIP uses: lines 1..N_MERGES of the gzipped file (line 0 is a version header)."""
    lines = gzip.decompress(Path(bpe_gz).read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{bpe_gz}: expected {N_MERGES} two-part merge lines after the header")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocab: byte chars, byte chars + </w>, one token per merge, then bos and eos."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"CLIP vocab has {len(vocab)} distinct tokens, expected {VOCAB_SIZE}")
    return vocab


def build_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int, pad_token: str) -> Tokenizer:
    """A tokenizers.Tokenizer configured exactly like transformers' CLIPTokenizer(Fast), plus fixed padding."""
    model = BPE(
        vocab=vocab,
        merges=merges,
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
        fuse_unk=False,
        unk_token=EOS,
    )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    # "</w>" marks a word end: make it the byte-level space char so ByteLevel decodes it, then drop the last one.
    tok.decoder = decoders.Sequence([decoders.Replace("</w>", "\u0120"), decoders.ByteLevel(), decoders.Strip(" ", 0, 1)])
    # Matched on the raw text, before lowercasing, as transformers' CLIP tokenizer does.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (BOS, EOS)])
    bos_id, eos_id = vocab[BOS], vocab[EOS]
    # Same layout as transformers' RobertaProcessing for CLIP: bos A eos (eos eos B eos for pairs).
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, bos_id), (EOS, eos_id)],
    )
    # Truncation reserves room for bos/eos, so a long prompt still ends with eos at position max_length-1.
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(direction="right", pad_id=vocab[pad_token], pad_token=pad_token, length=max_length)
    return tok


def write_clip_tokenizer(out_path: Path, bpe_gz: Path = DEFAULT_BPE, max_length: int = 77, pad_token: str = EOS) -> Path:
    """Write tokenizer.json at `out_path` plus transformers' CLIP files beside it; return `out_path`."""
    out_path = Path(out_path)
    merges = read_merges(bpe_gz)
    vocab = build_vocab(merges)
    if pad_token not in vocab:
        raise ValueError(f"pad token {pad_token!r} is not in the CLIP vocab")
    tok = build_tokenizer(vocab, merges, max_length, pad_token)
    with atomic_path(out_path) as tmp:
        tmp.write_text(tok.to_str() + "\n", encoding="utf-8")
    write_transformers_files(out_path.parent, vocab, merges, max_length, pad_token)
    return out_path


def write_transformers_files(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]], max_length: int, pad_token: str) -> None:
    """vocab.json, merges.txt and the two configs, as in openai/clip-vit-large-patch14's tokenizer folder."""
    _write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False) + "\n")
    _write_text(folder / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad_token, "unk_token": EOS}
    config = {**special, "do_lower_case": True, "model_max_length": max_length, "tokenizer_class": "CLIPTokenizer"}
    _write_text(folder / "special_tokens_map.json", json.dumps(special, indent=2, sort_keys=True) + "\n")
    _write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Atomic UTF-8 text write."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
