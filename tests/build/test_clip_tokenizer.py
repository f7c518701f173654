"""The CLIP tokenizer we build equals transformers' CLIPTokenizer and OpenAI's original algorithm, id for id."""

from __future__ import annotations

import gzip
import hashlib
import html
import json
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest

from t2vtrt.build.clip_tokenizer import BOS_ID, DEFAULT_BPE, EOS_ID, VOCAB_SIZE, write_clip_tokenizer

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
regex = pytest.importorskip("regex")

MAX_LENGTH = 77
FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")

PROMPTS = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT",
    "A ROBOT DANCING IN THE RAIN",
    "an astronaut riding a horse on mars",
    "a   panda    eating\tbamboo\n\non a rock",
    "   leading and trailing spaces   ",
    "don't stop, it's fine; we're here, they've gone, I'm in, you'll see, he'd go",
    "DON'T IT'S WE'RE",
    "rock'n'roll o'clock",
    "a well-known state-of-the-art text-to-video model -- with dashes --- and—em–en",
    "Hello, world! How are you?? Fine... (really) [yes] {no} <maybe>",
    "!!!???...,,,;;;:::",
    "@user #hashtag $100 50% a&b *star* _under_ ~tilde~ `tick` ^caret^ |pipe| \\back/slash",
    "3 cats and 12 dogs in 2024, pi=3.14159, 1,000,000 stars",
    "1234567890",
    "café naïve résumé Zürich Ångström façade",
    "cafe\u0301 (decomposed accent)",
    "Привет мир, собака бежит",
    "Ελληνικά γράμματα ΟΔΟΣ",
    "北京的一只熊猫在吃竹子",
    "東京タワー の 夜景",
    "한국어 문장",
    "مرحبا بالعالم",
    "a dog 🐶 running 🏃‍♂️ under fireworks 🎆✨",
    "👨‍👩‍👧‍👦 family emoji and flags 🇯🇵🇫🇷",
    "ﬁne ligature and full-width ＡＢＣ１２３",
    "tab\tseparated\tvalues and non\u00a0breaking\u2003spaces",
    "zero\u200bwidth space",
    "x <|endoftext|> y",
    "<|startoftext|> literal special tokens <|endoftext|>",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "a cinematic shot of " + "a very long and winding road through the mountains at sunset, " * 8,
    " ".join(str(i) for i in range(200)),
    "word " * 76,
    "word " * 75,
    "word " * 74,
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding tokenizer.json and transformers' CLIP files."""
    folder = tmp_path_factory.mktemp("clip") / "tokenizer"
    write_clip_tokenizer(folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def ours(tok_dir: Path):
    """Our tokenizer.json, loaded by the tokenizers library alone."""
    return tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def hf(tok_dir: Path):
    """transformers' CLIP tokenizer (CLIPTokenizerFast) built from our vocab.json and merges.txt."""
    return transformers.CLIPTokenizerFast(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"))


def hf_ids(tokenizer, prompt: str) -> list[int]:
    """Ids the way SD/ModelScope pipelines call the tokenizer."""
    return tokenizer(prompt, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]


def test_writes_all_files(tok_dir: Path) -> None:
    """tokenizer.json plus a normal transformers tokenizer folder, and no temp files left behind."""
    assert sorted(p.name for p in tok_dir.iterdir()) == sorted(FILES)


def test_vocab_and_special_ids(ours, tok_dir: Path) -> None:
    """49,408 tokens; bos 49406, eos 49407; 48,894 merges."""
    assert ours.get_vocab_size() == VOCAB_SIZE == 49408
    assert ours.token_to_id("<|startoftext|>") == BOS_ID == 49406
    assert ours.token_to_id("<|endoftext|>") == EOS_ID == 49407
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    merges = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894


def test_known_clip_ids(ours) -> None:
    """Anchor on ids published for openai/clip-vit-large-patch14, independent of any implementation here."""
    ids = ours.encode("a photo of a cat").ids
    assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[7:] == [49407] * (MAX_LENGTH - 7)


def test_long_prompt_truncates_like_transformers(ours, hf) -> None:
    """Past 77 tokens the ids are cut to 77 ending in EOS, exactly as transformers cuts them (what the model was trained on)."""
    prompt = " ".join(["balloon", "over", "a", "lake"] * 30)
    ids = ours.encode(prompt).ids
    assert len(ids) == MAX_LENGTH and ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert ids == hf_ids(hf, prompt)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_transformers(ours, hf, prompt: str) -> None:
    """Same ids as transformers.CLIPTokenizerFast with padding=max_length, truncation, max_length=77."""
    assert ours.encode(prompt).ids == hf_ids(hf, prompt)


def _reference_comparable(prompt: str) -> bool:
    """Prompts where transformers and OpenAI's original agree by design (see test_known_divergence_from_openai)."""
    # Literal special tokens are matched before lowercasing by tokenizers; a capital final sigma lowercases
    # to "ς" in Python's str.lower() but to "σ" in tokenizers' per-character Lowercase normalizer.
    return "<|" not in prompt and "Σ" not in prompt


@pytest.mark.parametrize("prompt", [p for p in PROMPTS if _reference_comparable(p)])
def test_matches_openai_reference(ours, prompt: str) -> None:
    """Same ids as a pure-Python port of OpenAI's simple_tokenizer (transformers 5 has no slow CLIPTokenizer)."""
    assert ours.encode(prompt).ids == openai_reference_ids(prompt)


def test_known_divergence_from_openai(ours, hf) -> None:
    """Where transformers and OpenAI differ, we follow transformers (what diffusers pipelines run)."""
    prompt = "ΟΔΟΣ"
    assert ours.encode(prompt).ids == hf_ids(hf, prompt) != openai_reference_ids(prompt)


def test_runtime_tokenizer_gives_the_same_ids(ours, tok_dir: Path) -> None:
    """The runtime's PromptTokenizer (what `generate` feeds the text encoder) pads and truncates to the same ids."""
    from t2vtrt.runtime.tokenizer import PromptTokenizer

    runtime = PromptTokenizer.from_file(tok_dir / "tokenizer.json", MAX_LENGTH, EOS_ID)
    prompts = [*PROMPTS, " ".join(["red"] * 100)]
    assert runtime.encode(prompts).tolist() == [e.ids for e in ours.encode_batch(prompts)]
    assert runtime.dropped(prompts)[-1] == 100 + 2 - MAX_LENGTH


def test_from_pretrained_folder(ours, tok_dir: Path) -> None:
    """The folder loads offline with AutoTokenizer; configs give max length 77 and pad = eos."""
    auto = transformers.AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    assert auto.model_max_length == MAX_LENGTH
    assert auto.pad_token_id == EOS_ID and auto.bos_token_id == BOS_ID and auto.eos_token_id == EOS_ID
    batch = auto(PROMPTS, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]
    assert batch == [e.ids for e in ours.encode_batch(PROMPTS)]
    # Padding is stored in tokenizer.json, but transformers must not apply it unless asked.
    assert auto("a cat")["input_ids"] == [49406, 320, 2368, 49407]


def test_truncation_keeps_eos(ours) -> None:
    """A long prompt becomes bos + first 75 tokens + eos, with no padding."""
    ids = ours.encode("word " * 200).ids
    assert len(ids) == MAX_LENGTH
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    assert set(ids[1:-1]) == {ours.token_to_id("word</w>")}


def test_padding_with_eos(ours) -> None:
    """Empty prompt: bos, eos, then eos padding to 77; the attention mask marks only the first two."""
    enc = ours.encode("")
    assert enc.ids == [BOS_ID] + [EOS_ID] * (MAX_LENGTH - 1)
    assert enc.attention_mask == [1, 1] + [0] * (MAX_LENGTH - 2)


def test_decode_round_trip(ours) -> None:
    """Decoding gives back the normalized words, spaced, for debugging output."""
    assert ours.decode(ours.encode("A photo of a Café").ids) == "a photo of a café"


def test_custom_max_length(tmp_path: Path) -> None:
    """max_length is honoured for truncation and padding."""
    path = write_clip_tokenizer(tmp_path / "tokenizer.json", max_length=8)
    tok = tokenizers.Tokenizer.from_file(str(path))
    assert tok.encode("word " * 20).ids == [BOS_ID] + [tok.token_to_id("word</w>")] * 6 + [EOS_ID]
    assert tok.encode("hi").ids[-1] == EOS_ID and len(tok.encode("hi").ids) == 8


def test_deterministic(tok_dir: Path, tmp_path: Path) -> None:
    """Writing again gives byte-identical files."""
    write_clip_tokenizer(tmp_path / "tokenizer.json")
    for name in FILES:
        assert _sha(tmp_path / name) == _sha(tok_dir / name), name


def test_rejects_wrong_bpe_file(tmp_path: Path) -> None:
    """A merges file that is too short is refused, and nothing is written."""
    bad = tmp_path / "short.txt.gz"
    bad.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    with pytest.raises(ValueError, match="merge lines"):
        write_clip_tokenizer(tmp_path / "out" / "tokenizer.json", bpe_gz=bad)
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def _sha(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- A port of OpenAI CLIP's simple_tokenizer.py (MIT), kept independent of t2vtrt.build.clip_tokenizer. ---
# ftfy.fix_text is not installed; for these prompts (no mojibake) its effect is the NFC normalization below.


@lru_cache(maxsize=1)
def _openai_tables() -> tuple[dict[int, str], dict[str, int], dict[tuple[str, str], int]]:
    """Byte encoder, token -> id, merge -> rank, built exactly as simple_tokenizer.SimpleTokenizer does."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    byte_encoder = dict(zip(bs, [chr(c) for c in cs]))
    merges = gzip.open(DEFAULT_BPE).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1 : 49152 - 256 - 2 + 1]]
    vocab = list(byte_encoder.values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return byte_encoder, dict(zip(vocab, range(len(vocab)))), dict(zip(merges, range(len(merges))))


def _openai_bpe(token: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """OpenAI's greedy lowest-rank merge loop over one pre-token."""
    word = tuple(token[:-1]) + (token[-1] + "</w>",)
    while len(word) > 1:
        pairs = set(zip(word, word[1:]))
        bigram = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if bigram not in ranks:
            break
        first, second = bigram
        merged: list[str] = []
        i = 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(word[i])
                i += 1
        word = tuple(merged)
    return list(word)


def openai_reference_ids(prompt: str) -> list[int]:
    """OpenAI CLIP's encode + open_clip's truncation (keep eos), padded with eos as SD/ModelScope pipelines do."""
    byte_encoder, encoder, ranks = _openai_tables()
    pattern = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )
    text = unicodedata.normalize("NFC", html.unescape(html.unescape(prompt)).strip())
    text = regex.sub(r"\s+", " ", text).strip().lower()
    ids = []
    for piece in pattern.findall(text):
        ids += [encoder[t] for t in _openai_bpe("".join(byte_encoder[b] for b in piece.encode("utf-8")), ranks)]
    tokens = [BOS_ID] + ids[: MAX_LENGTH - 2] + [EOS_ID]
    return tokens + [EOS_ID] * (MAX_LENGTH - len(tokens))
