"""`survey(model, data, stats=...)`: stream a corpus through the model, fold each batch into
mergeable accumulators at the hooks, merge ranks, and hand back (and save) the tables."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.survey import data as data_mod
from interp.survey import distributed
from interp.survey.accumulators import Accumulators
from interp.survey.batch import collate
from interp.survey.checkpoint import Checkpoint
from interp.survey.experts import ExpertStats
from interp.survey.features import FeatureStats
from interp.survey.heads import HeadStats
from interp.survey.layers import LENS_EVERY, LayerStats
from interp.survey.output import Survey, check_writable
from interp.trace.facts import ModelFacts

STATS = {"experts": ExpertStats, "heads": HeadStats, "layers": LayerStats}


def survey(
    model,
    data: str | Path | Sequence[str | Path] = (),
    *,
    stats: Sequence[str] | None = None,
    seq_len: int = 256,
    batch_size: int = 8,
    tokens: int | None = None,
    out: str | Path | None = None,
    checkpoint_every: int = 50,
    seed: int = 0,
    progress: bool = False,
    command: str | None = None,
    features=(),
) -> Survey:
    """Statistics of `model` over a whole corpus, in constant memory.

    `data`: files (text, .jsonl, .parquet, a `datasets` directory); none = the held-out corpus
    the zoo models were trained on. `stats`: any of experts / heads / layers (default: all the
    model can give). With `out`, the survey is saved there, checkpointed every
    `checkpoint_every` batches, and the same call after a crash resumes. Under torchrun, each
    rank reads and tokenizes only its own documents (`interp.survey.data`), the ranks' sums
    are merged and rank 0 writes. `features`: dictionaries (or their paths) whose
    feature frequencies and top contexts are counted too (`interp.survey.features`).
    """
    hook_names = dict.fromkeys(model.hook_dict)
    facts = {
        **ModelFacts.of(model).as_dict(),
        "model": getattr(model, "interp_name", ""),
    }
    stats = _check_args(model, facts, stats, seq_len, batch_size, tokens, checkpoint_every)
    out = Path(out) if out is not None else None
    if out is not None:
        check_writable(out)
    paths = [data] if isinstance(data, str | Path) else list(data)
    ranks = distributed.setup(model)
    corpus = data_mod.Corpus(paths, ranks)
    bos = data_mod.bos_token(model)
    data_mod.check_long_enough(corpus, model.tokenizer, seq_len, bos)
    acc = Accumulators(ranks.device)
    parts = [STATS[name](model, acc, corpus.domains, facts) for name in stats]
    dictionaries = _dictionaries(model, hook_names, features)
    if dictionaries:
        parts.append(FeatureStats(acc, dictionaries, seq_len))
    hooks = [(name, fn) for part in parts for name, fn in part.hooks() if name in hook_names]
    module_hooks = [pair for part in parts for pair in getattr(part, "module_hooks", list)()]
    settings = {"model": facts["model"], "data": corpus.name, "stats": stats, "seq_len": seq_len,
                "batch_size": batch_size, "tokens": tokens, "seed": seed,
                "features": [d.path for d in dictionaries]}  # fmt: skip
    checkpoint = None
    start = 0
    if out is not None:
        checkpoint = Checkpoint(out, ranks.rank, ranks.world, settings)
        start = checkpoint.load(acc)
        if start and ranks.rank == 0:
            print(f"interp: resuming {out} from batch {start}", file=sys.stderr)
    windows = data_mod.windows(corpus, model.tokenizer, seq_len, bos, tokens)
    share = None if tokens is None else tokens / ranks.world  # rank 0's part, about
    bar = _bar(progress and ranks.rank == 0, share)
    counted = n_windows = n_batches = n_documents = 0
    last = None
    with torch.no_grad(), model.hooks(fwd_hooks=hooks), _attached(module_hooks):
        for index, chunk in enumerate(data_mod.batches(windows, batch_size)):
            n_windows, n_batches = n_windows + len(chunk), index + 1
            counted += sum(len(w.ids) for w in chunk)
            for w in chunk:  # a document's windows come one after another
                n_documents, last = n_documents + (w.document != last), w.document
            if index < start:
                continue
            batch = collate(chunk, corpus.domains, seed, ranks.device)
            for part in parts:
                part.start(batch)
            logits = model(batch.ids, return_type="logits")
            for part in parts:
                part.finish(batch, logits)
            if checkpoint is not None and (index + 1) % checkpoint_every == 0:
                checkpoint.save(acc, index + 1)
            if bar is not None:
                bar.total = share or round(counted * corpus.chars / chunk[-1].chars_done)
                bar.update(counted - bar.n)
    if bar is not None:
        bar.close()
    distributed.merge(acc, ranks)
    result = _tables(parts, acc, corpus, model.tokenizer)
    # Each rank counted its own windows; "documents" (tokenized, per rank) shows the shards.
    shards = ranks.gather((counted, n_windows, n_batches, n_documents))
    counted, n_windows, n_batches = (sum(s[i] for s in shards) for i in range(3))
    result.meta = {"survey": 1, **settings, "tokens": counted, "token_cap": tokens,
                   "windows": n_windows, "batches": n_batches, "domains": corpus.domains,
                   "documents": [s[3] for s in shards], "world_size": ranks.world,
                   "lens_every": LENS_EVERY, "cfg": facts,
                   "command": command or shlex.join(sys.argv)}  # fmt: skip
    if out is not None and ranks.rank == 0:
        result.save(out)
        checkpoint.clear()
    distributed.barrier(ranks)
    return result


def _dictionaries(model, hook_names, features) -> list:
    if not features:
        return []
    from interp.features.attach import check, dictionaries

    found = dictionaries(features)
    for d in found:
        check(d, model, hook_names)
    return found


@contextlib.contextmanager
def _attached(module_hooks):
    """Forward hooks on Hugging Face modules (the routers), removed however the run ends."""
    handles = [module.register_forward_hook(fn) for module, fn in module_hooks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_args(model, facts, stats, seq_len, batch_size, tokens, checkpoint_every) -> list[str]:
    if stats is None:
        stats = [s for s in STATS if s != "experts" or facts["moe_layers"]]
    stats = list(dict.fromkeys(stats))
    for name in stats:
        if name not in STATS:
            raise InterpError(f"unknown statistic {name!r}; choose from {', '.join(STATS)}")
    if not stats:
        raise InterpError("no statistics asked for")
    if "experts" in stats and not facts["moe_layers"]:
        raise InterpError(f"{facts['model']} has no routed experts: drop 'experts' from --stats")
    if model.tokenizer is None:
        raise InterpError(f"{facts['model']} has no tokenizer: a survey reads text")
    if not 1 < seq_len <= facts["n_ctx"]:
        raise InterpError(f"--seq-len must lie in [2, {facts['n_ctx']}] (the model's context)")
    if batch_size < 1:
        raise InterpError("--batch-size must be >= 1")
    if tokens is not None and tokens < 1:
        raise InterpError("--tokens must be >= 1")
    if checkpoint_every < 1:
        raise InterpError("--checkpoint-every must be >= 1")
    return stats


def _tables(parts, acc: Accumulators, corpus, tokenizer) -> Survey:
    state = acc.state_dict()
    tables: dict = {}
    for part in parts:
        tables.update(part.tables(state, corpus.domains, tokenizer))
    return Survey(tables, {})


def _bar(show: bool, total: int | None):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc="survey", file=sys.stderr)
