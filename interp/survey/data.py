"""The corpus of a survey: documents from files, cut into token windows in a fixed order.

Readers yield ``(domain, text)`` documents: text files (domain: the file's stem), ``.jsonl``
(a ``text`` field, an optional ``domain``), ``.parquet`` (the same columns) and a Hugging Face
``datasets`` directory saved with ``save_to_disk``. With no files, the held-out part of the
corpus the zoo models were trained on (`interp.corpus`, domains code / prose / numbers).

Every document is tokenized on its own (BOS first where the model prepends one) and cut into
windows of at most ``seq_len`` tokens; windows never cross documents. The window order is the
same in every run and for any number of ranks, so a run can be resumed by batch index.

Under torchrun the corpus is sharded by record: record i (a text file, a jsonl line, a parquet
or datasets row, counted across the files in order, blank ones included) belongs to rank
i % world. A rank decodes, parses and tokenizes only its own records (it still reads the bytes
of every jsonl line, to find where lines end, and a parquet file's text column). Records, not byte
ranges: a record's number needs no tokenizer and no other rank, and no window spans two, so
the ranks' windows together are exactly one process's (`interp.survey.shard` numbers them).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from interp import validate
from interp.errors import InterpError
from interp.prompts import plain_ids
from interp.survey.distributed import SOLO, Ranks

DEFAULT_DATA = "held-out"  # the name meta.json records for the shipped corpus

Records = Iterator[tuple[int, str, str]]  # (record number, domain, text)


@dataclass(frozen=True)
class Window:
    index: int  # position in the corpus's window order (the same for any number of ranks)
    domain: str
    ids: torch.Tensor  # [n <= seq_len]
    chars_done: int  # characters of this rank's records read up to this window's, for ETAs
    document: int  # the record it was cut from


class Corpus:
    """Documents of one or more files (or the shipped held-out corpus), read lazily: under
    torchrun (`ranks`), only this rank's records."""

    def __init__(self, paths: Sequence[str | Path] = (), ranks: Ranks = SOLO):
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            if not path.exists():
                raise InterpError(f"{path} does not exist")
        self.name = ", ".join(map(str, self.paths)) or DEFAULT_DATA
        self.ranks = ranks
        self.domains, self.chars = self._scan()

    def _scan(self) -> tuple[list[str], int]:
        """One pass over this rank's documents: its size, every reader's errors before any
        model runs, and (from every rank) the domains in order of first appearance."""
        first: dict[str, int] = {}
        chars = 0
        for record, domain, text in self.records():
            first.setdefault(domain, record)
            chars += len(text)
        shards = self.ranks.gather((first, chars))
        everywhere: dict[str, int] = {}
        for seen, _ in shards:
            for domain, record in seen.items():
                everywhere[domain] = min(record, everywhere.get(domain, record))
        if sum(size for _, size in shards) == 0:
            raise InterpError(f"the corpus {self.name} holds no text")
        return sorted(everywhere, key=everywhere.get), chars

    def records(self) -> Records:
        """(record, domain, text) of this rank's non-blank documents, in order."""
        rank, world = self.ranks.rank, self.ranks.world

        def mine(record: int) -> bool:
            return record % world == rank

        if not self.paths:
            yield from ((i, d, t) for i, (d, t) in enumerate(_held_out()) if mine(i))
        first = 0
        for path in self.paths:
            first = yield from _read(path, first, mine)

    def documents(self) -> Iterator[tuple[str, str]]:
        return ((domain, text) for _, domain, text in self.records())


@functools.cache
def _held_out() -> tuple[tuple[str, str], ...]:
    """The validation split of `interp.corpus` (a few MB), built once per process."""
    from interp.corpus import corpus

    return tuple(corpus("validation"))


# Each reader yields the records of `path` that `mine` takes, numbered from `first`, and
# returns the number after its last record.
Mine = Callable[[int], bool]


def _read(path: Path, first: int, mine: Mine):
    if path.is_dir():
        return (yield from _read_datasets(path, first, mine))
    if path.suffix == ".jsonl":
        return (yield from _read_jsonl(path, first, mine))
    if path.suffix == ".parquet":
        return (yield from _read_parquet(path, first, mine))
    if mine(first):
        try:
            text = validate.utf8(path.read_bytes(), path)
        except OSError as exc:
            raise InterpError(f"cannot read {path}: {exc.strerror}") from None
        if text.strip():
            yield first, path.stem, text
    return first + 1


def _record(row: dict, where: str) -> tuple[str, str]:
    text = row.get("text") if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise InterpError(f"{where} has no 'text' string")
    domain = row.get("domain")
    return ("all" if domain is None else str(domain)), text


def _read_jsonl(path: Path, first: int, mine: Mine):
    number = 0
    try:
        with path.open("rb") as f:
            offset = 0
            for number, raw in enumerate(f, 1):
                if mine(first + number - 1):
                    line = validate.utf8(raw, f"{path}:{number}", offset)
                    if line.strip():
                        row = validate.json_text(line, f"{path}:{number}")
                        domain, text = _record(row, f"{path}:{number}")
                        if text.strip():
                            yield first + number - 1, domain, text
                offset += len(raw)
    except OSError as exc:
        raise InterpError(f"cannot read {path}: {exc.strerror}") from None
    return first + number


def _read_parquet(path: Path, first: int, mine: Mine):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        if "text" not in reader.schema_arrow.names:
            raise InterpError(f"{path} has no 'text' column")
        columns = [c for c in ("text", "domain") if c in reader.schema_arrow.names]
        # Row groups one at a time: a large file is never held whole.
        for batch in reader.iter_batches(columns=columns):
            own = [i for i in range(batch.num_rows) if mine(first + i)]
            for i, row in zip(own, batch.take(own).to_pylist()):
                domain, text = _record(row, f"a row of {path}")
                if text.strip():
                    yield first + i, domain, text
            first += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise InterpError(f"cannot read {path} as parquet: {exc}") from None
    return first


def _read_datasets(path: Path, first: int, mine: Mine):
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
        own = [i for i in range(len(part)) if mine(first + i)]
        for i, row in zip(own, part.select(own)):
            domain, text = _record(row, f"a row of {path}")
            if text.strip():
                yield first + i, domain, text
        first += len(part)
    return first


def windows(corpus: Corpus, tokenizer, seq_len: int, bos: int | None, tokens: int | None):
    """Windows of at most `seq_len` tokens in corpus order; `tokens` caps the total (of all
    ranks together: the first `tokens` tokens of the corpus). Under torchrun, this rank's."""
    cut = cutter(tokenizer, seq_len, bos)
    if corpus.ranks.world > 1:
        from interp.survey.shard import sharded_windows

        yield from sharded_windows(corpus, cut, tokens)
        return
    index, total, chars = 0, 0, 0
    for record, domain, text in corpus.records():
        chars += len(text)
        for chunk in cut(text):
            if tokens is not None:
                chunk = chunk[: tokens - total]
            if len(chunk) == 0:
                return
            yield Window(index, domain, torch.tensor(chunk, dtype=torch.long), chars, record)
            index, total = index + 1, total + len(chunk)
            if tokens is not None and total >= tokens:
                return


def cutter(tokenizer, seq_len: int, bos: int | None) -> Callable[[str], Iterator[list[int]]]:
    """text -> its windows' ids: cut every seq_len tokens from the document's start, piece by
    piece as it is read."""
    split = _splits_cleanly(tokenizer)

    def cut(text: str) -> Iterator[list[int]]:
        ids = [bos] if bos is not None else []
        for piece in _pieces(text, split):
            ids += plain_ids(tokenizer, piece)
            while len(ids) >= seq_len:
                yield ids[:seq_len]
                ids = ids[seq_len:]
        if ids:
            yield ids

    return cut


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
    """A corpus with fewer tokens than one window is a mistake (the survey would be noise).
    Each rank counts its own records up to one window; the ranks' counts are summed."""
    cut, seen = cutter(tokenizer, seq_len, bos), 0
    for _, _, text in corpus.records():
        seen += len(next(cut(text), []))  # a document's first window: all of it, or seq_len
        if seen >= seq_len:
            break
    seen = sum(corpus.ranks.gather(min(seen, seq_len)))
    if seen < seq_len:
        raise InterpError(f"the corpus {corpus.name} has {seen} tokens, fewer than one window "
                          f"of {seq_len} (--seq-len)")  # fmt: skip


def batches(stream: Iterator[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows, `batch_size` at a time: batch i is the same in every run (and, on
    each rank, in every run with as many ranks)."""
    batch: list[Window] = []
    for window in stream:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
