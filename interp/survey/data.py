"""The corpus of a survey: documents from files, cut into token windows in a fixed order.

Readers yield ``(domain, text)`` documents: text files (domain: the file's stem), ``.jsonl``
(a ``text`` field, an optional ``domain``), ``.parquet`` (the same columns) and a Hugging Face
``datasets`` directory saved with ``save_to_disk``. With no files, the held-out part of the
corpus the zoo models were trained on (`interp.corpus`, domains code / prose / numbers).

Every document is tokenized on its own (BOS first where the model prepends one) and cut into
windows of at most ``seq_len`` tokens; windows never cross documents. The window order is the
same on every rank and every run, so windows can be split by rank and a run resumed by index.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from interp import validate
from interp.errors import InterpError
from interp.prompts import plain_ids

DEFAULT_DATA = "held-out"  # the name meta.json records for the shipped corpus


@dataclass(frozen=True)
class Window:
    index: int  # position in the corpus's window order
    domain: str
    ids: torch.Tensor  # [n <= seq_len]
    chars_done: int  # characters of the corpus read up to this window's document, for ETAs


class Corpus:
    """Documents of one or more files (or the shipped held-out corpus), read lazily."""

    def __init__(self, paths: Sequence[str | Path] = ()):
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.exists():
                raise InterpError(f"{path} does not exist")
        self.name = ", ".join(map(str, self.paths)) or DEFAULT_DATA
        self.domains, self.chars = self._scan()

    def _scan(self) -> tuple[list[str], int]:
        """One pass over the documents: their domains (in order of appearance), their size,
        and every reader's errors before any model runs."""
        domains: dict[str, None] = {}
        chars = 0
        for domain, text in self.documents():
            domains.setdefault(domain)
            chars += len(text)
        if chars == 0:
            raise InterpError(f"the corpus {self.name} holds no text")
        return list(domains), chars

    def documents(self) -> Iterator[tuple[str, str]]:
        if not self.paths:
            yield from _held_out()
        for path in self.paths:
            yield from _read(path)


@functools.cache
def _held_out() -> tuple[tuple[str, str], ...]:
    """The validation split of `interp.corpus` (a few MB), built once per process."""
    from interp.corpus import corpus

    return tuple(corpus("validation"))


def _read(path: Path) -> Iterator[tuple[str, str]]:
    if path.is_dir():
        yield from _read_datasets(path)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        try:
            text = validate.utf8(path.read_bytes(), path)
        except OSError as exc:
            raise InterpError(f"cannot read {path}: {exc.strerror}") from None
        if text.strip():
            yield path.stem, text


def _record(row: dict, where: str) -> tuple[str, str]:
    text = row.get("text") if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise InterpError(f"{where} has no 'text' string")
    domain = row.get("domain")
    return ("all" if domain is None else str(domain)), text


def _read_jsonl(path: Path) -> Iterator[tuple[str, str]]:
    try:
        with path.open("rb") as f:
            offset = 0
            for number, raw in enumerate(f, 1):
                line = validate.utf8(raw, f"{path}:{number}", offset)
                offset += len(raw)
                if not line.strip():
                    continue
                row = validate.json_text(line, f"{path}:{number}")
                domain, text = _record(row, f"{path}:{number}")
                if text.strip():
                    yield domain, text
    except OSError as exc:
        raise InterpError(f"cannot read {path}: {exc.strerror}") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        if "text" not in reader.schema_arrow.names:
            raise InterpError(f"{path} has no 'text' column")
        columns = [c for c in ("text", "domain") if c in reader.schema_arrow.names]
        # Row groups one at a time: a large file is never held whole.
        for batch in reader.iter_batches(columns=columns):
            for row in batch.to_pylist():
                domain, text = _record(row, f"a row of {path}")
                if text.strip():
                    yield domain, text
    except (pa.ArrowException, OSError) as exc:
        raise InterpError(f"cannot read {path} as parquet: {exc}") from None


def _read_datasets(path: Path) -> Iterator[tuple[str, str]]:
    if not any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json")):
        raise InterpError(f"{path} is a directory but no datasets save_to_disk directory")
    try:
        import datasets
    except ImportError:
        raise InterpError(
            f"reading {path} needs the `datasets` package (pip install datasets)"
        ) from None
    try:
        data = datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # FileNotFoundError among them
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InterpError(f"{path} is not a datasets save_to_disk directory: {reason}") from None
    parts = data.values() if isinstance(data, datasets.DatasetDict) else [data]
    for part in parts:
        if "text" not in part.column_names:
            raise InterpError(f"{path} has no 'text' column")
        for row in part:
            domain, text = _record(row, f"a row of {path}")
            if text.strip():
                yield domain, text


def windows(corpus: Corpus, tokenizer, seq_len: int, bos: int | None, tokens: int | None):
    """Windows of at most `seq_len` tokens in corpus order; `tokens` caps the total."""
    index, total, chars = 0, 0, 0
    split = _splits_cleanly(tokenizer)

    def doc_windows(text: str) -> Iterator[list[int]]:
        # Cut every seq_len tokens from the document's start, piece by piece as it is read.
        ids = [bos] if bos is not None else []
        for piece in _pieces(text, split):
            ids += plain_ids(tokenizer, piece)
            while len(ids) >= seq_len:
                yield ids[:seq_len]
                ids = ids[seq_len:]
        if ids:
            yield ids

    for domain, text in corpus.documents():
        chars += len(text)
        for chunk in doc_windows(text):
            if tokens is not None:
                chunk = chunk[: tokens - total]
            if len(chunk) == 0:
                return
            yield Window(index, domain, torch.tensor(chunk, dtype=torch.long), chars)
            index, total = index + 1, total + len(chunk)
            if tokens is not None and total >= tokens:
                return


PIECE_CHARS = 8192  # a long document is tokenized in pieces: memory follows the piece
_BOUNDARY = re.compile(r"\s(?=\S)")  # cut before the last blank of a run: a pre-token edge
_PROBE = "x = 1\nif y:\n    z(2)  # don't\n\n\ndef f():\n\treturn 3.5\nword after word\n"


def _splits_cleanly(tokenizer) -> bool:
    """Whether cutting text at `_BOUNDARY` leaves its tokens unchanged (true of byte-level
    BPE; a SentencePiece tokenizer that adds a prefix space to every call is not)."""
    cuts = [m.start() for m in _BOUNDARY.finditer(_PROBE)]
    parts = [_PROBE[a:b] for a, b in zip([0, *cuts], [*cuts, len(_PROBE)])]
    return [i for part in parts for i in plain_ids(tokenizer, part)] == plain_ids(tokenizer, _PROBE)


def _pieces(text: str, split: bool) -> Iterator[str]:
    """`text` in pieces of about PIECE_CHARS, cut only at `_BOUNDARY`."""
    start = 0
    while split and len(text) - start > PIECE_CHARS:
        match = _BOUNDARY.search(text, start + PIECE_CHARS)
        if match is None:
            break
        yield text[start : match.start()]
        start = match.start()
    yield text[start:]


def bos_token(model) -> int | None:
    """The BOS id when the model prepends one (TL's `default_prepend_bos`), else None. A
    document starts a sequence as in training (interp.corpus puts BOS before each), whatever
    the tokenizer adds to a prompt (interp.prompts)."""
    bos = getattr(model.tokenizer, "bos_token_id", None)
    return bos if getattr(model.cfg, "default_prepend_bos", True) and bos is not None else None


def check_long_enough(corpus: Corpus, tokenizer, seq_len: int, bos: int | None) -> None:
    """A corpus with fewer tokens than one window is a mistake (the survey would be noise)."""
    seen = 0
    for window in windows(corpus, tokenizer, seq_len, bos, None):
        seen += len(window.ids)
        if seen >= seq_len:
            return
    raise InterpError(f"the corpus {corpus.name} has {seen} tokens, fewer than one window of "
                      f"{seq_len} (--seq-len)")  # fmt: skip


def batches(stream: Iterator[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows, `batch_size` at a time: batch i is the same in every run."""
    batch: list[Window] = []
    for window in stream:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
