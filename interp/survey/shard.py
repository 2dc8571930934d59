"""A rank's windows of a corpus sharded by record, numbered as one process numbers them.

Record i belongs to rank i % world (`interp.survey.data`). The ranks go through the records
in blocks of BLOCK per rank: each tokenizes its own records of the block, the ranks exchange
how many tokens each record's windows hold (a few integers, `Ranks.gather`), and from that
every rank knows the corpus index of each of its windows and the tokens before it. So the
window indices (the split halves, the lens positions, the feature contexts' ids) and a
`--tokens` cap (the first N tokens of the corpus, in record order) are exactly those of one
process; only which rank, and so which batch, a window lands in differs.

A rank holds one block of its records' tokens at a time; one huge record (a single large
text file) is therefore held whole, and is surveyed by one rank: shard such a corpus into
files or jsonl lines.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import torch

from interp.survey.data import Window

BLOCK = 64  # records per rank between two exchanges: a few exchanges per batch at most


def sharded_windows(corpus, cut: Callable[[str], Iterator[list[int]]], tokens: int | None):
    ranks, span = corpus.ranks, BLOCK * corpus.ranks.world
    own = corpus.records()
    pending = next(own, None)
    index = total = chars = 0  # the corpus's windows and tokens before the block; own chars
    for end in itertools.count(span, span):
        block = []
        while pending is not None and pending[0] < end:
            record, domain, text = pending
            chars += len(text)
            ids = [torch.tensor(chunk, dtype=torch.long) for chunk in cut(text)]
            block.append((record, domain, ids, chars))
            pending = next(own, None)
        sizes = [(record, [len(w) for w in ids]) for record, _, ids, _ in block]
        shards = ranks.gather((sizes, pending is None))
        start = {}
        for record, lengths in sorted(item for part, _ in shards for item in part):
            start[record] = (index, total)
            index, total = index + len(lengths), total + sum(lengths)
        for record, domain, ids, done in block:
            i, before = start[record]
            for window in ids:
                # --tokens is global: the corpus's first N tokens, wherever their records are.
                if tokens is not None:
                    window = window[: max(tokens - before, 0)]
                if len(window) == 0:
                    break
                yield Window(i, domain, window, done, record)
                i, before = i + 1, before + len(window)
        # Decided from the exchanged sizes alone, so every rank stops after the same block.
        if all(finished for _, finished in shards) or (tokens is not None and total >= tokens):
            return
