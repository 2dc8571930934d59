"""A small mixed-domain corpus built only from text that every Python install ships.

Three domains, chosen so that a tiny model can tell them apart and an MoE router has
something to specialise on:

- code:    the standard library's own top-level ``*.py`` sources,
- prose:   the English reference text behind ``help()`` (``pydoc_data.topics``),
- numbers: generated arithmetic lines such as ``417 + 86 = 503``.

Documents are ``(domain, text)`` pairs. The train/validation split is decided per document by
a CRC of its stable key (file name, topic name, document index), so it never depends on file
system order, Python's hash seed, or which other documents exist.
"""

from __future__ import annotations

import random
import sysconfig
import zlib
from pathlib import Path

import torch

DOMAINS = ("code", "prose", "numbers")
SPLITS = ("train", "validation")
VALIDATION_EVERY = 10  # one document in ten (by key checksum) is held out
NUMBERS_DOCS = 2000
NUMBERS_LINES_PER_DOC = 32
NUMBERS_SEED = 1234


def split_of(key: str) -> str:
    """'train' or 'validation' for a document key; stable across machines and runs."""
    return "validation" if zlib.crc32(key.encode()) % VALIDATION_EVERY == 0 else "train"


def _code() -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append((path.name, text))
    return docs


def _prose() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(name, topics[name]) for name in sorted(topics)]


def arithmetic_line(rng: random.Random) -> str:
    """One line of integer arithmetic with its correct result."""
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        return f"{a} * {b} = {a * b}"
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return f"{a} + {b} = {a + b}" if op == "+" else f"{a} - {b} = {a - b}"


def _numbers() -> list[tuple[str, str]]:
    rng = random.Random(NUMBERS_SEED)
    docs = []
    for i in range(NUMBERS_DOCS):
        lines = [arithmetic_line(rng) for _ in range(NUMBERS_LINES_PER_DOC)]
        docs.append((f"numbers-{i}", "\n".join(lines) + "\n"))
    return docs


_SOURCES = {"code": _code, "prose": _prose, "numbers": _numbers}


def documents(domain: str, split: str = "train") -> list[str]:
    """Texts of one domain and split, in a fixed order."""
    if domain not in _SOURCES:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    # The key is prefixed with the domain so equal names in two domains split independently.
    return [text for key, text in _SOURCES[domain]() if split_of(f"{domain}/{key}") == split]


def corpus(split: str = "train", domains: tuple[str, ...] = DOMAINS) -> list[tuple[str, str]]:
    """All ``(domain, text)`` documents of a split, domain by domain."""
    return [(domain, text) for domain in domains for text in documents(domain, split)]


def held_out_windows(tokenizer, domain: str, seq_len: int, max_windows: int) -> torch.Tensor:
    """Non-overlapping BOS-prefixed token windows ``[n, seq_len]`` of a domain's validation text.

    Documents are joined with the EOS token, as in training; the model's recorded validation
    loss is measured on exactly these windows, so anyone can recompute it.
    """
    ids: list[int] = []
    for text in documents(domain, "validation"):
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    body = seq_len - 1
    n = min(len(ids) // body, max_windows)
    windows = torch.tensor(ids[: n * body], dtype=torch.long).view(n, body)
    bos = torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long)
    return torch.cat([bos, windows], dim=1)
