"""Activation patching between a clean and a corrupted prompt: `interp.patching`.

    result = interp.patching(model, "The Eiffel Tower is in the city of",
                             "The Colosseum is in the city of", answer=" Paris", wrong=" Rome")
    result.frames["resid"]   # method layer pos token score (0 = corrupted run, 1 = clean run)

Three runs feed everything: the clean prompt (its activations, no gradient), the corrupted
prompt with gradients (its activations and d metric / d activation, for attribution patching),
then the patched runs, each a batch of `batch_size` copies of the corrupted prompt, one cell
patched per copy. The math (metric, cells, normalisation, attribution) is
`interp.analysis.patching`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from interp.analysis import patching as pa
from interp.errors import InterpError
from interp.models.devices import input_device
from interp.prompts import encode, plain_ids
from interp.runs.grad import with_grad
from interp.text import token_texts
from interp.vocab import long_frame

METHODS = ("activation", "attribution")  # exact patching, its gradient estimate


@dataclass
class Patching:
    frames: dict[str, pd.DataFrame]  # grid -> method layer [pos token | head] score
    clean: float  # the metric on the clean prompt
    corrupt: float  # ... on the corrupted prompt
    metric: str  # what the metric measures, in words
    tokens: list[str]  # the clean prompt's tokens
    corrupt_tokens: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # grid or "attribution" -> seconds


def prompt_ids(model, prompt: str | torch.Tensor) -> torch.Tensor:
    if isinstance(prompt, torch.Tensor):
        return prompt.long().flatten()
    return encode(model.tokenizer, prompt, model.cfg.n_ctx)


def token_id(model, token: str | int, what: str) -> int:
    """One vocabulary id for `token` (an id, or text that must be exactly one token)."""
    if isinstance(token, int):
        if not 0 <= token < model.cfg.d_vocab:
            raise InterpError(f"{what} id {token} is outside [0, {model.cfg.d_vocab})")
        return token
    if model.tokenizer is None:
        raise InterpError(f"this model has no tokenizer: give {what} as a token id")
    ids = plain_ids(model.tokenizer, token)
    if len(ids) != 1:
        pieces = token_texts(model.tokenizer, ids)
        raise InterpError(f"{what} {token!r} is {len(ids)} tokens {pieces}; give one token")
    return int(ids[0])


def patching(
    model,
    clean: str | torch.Tensor,
    corrupt: str | torch.Tensor,
    answer: str | int,
    wrong: str | int | None = None,
    *,
    grids: Sequence[str] = pa.GRIDS,
    batch_size: int = 32,
) -> Patching:
    """The patching grids (`pa.GRIDS`), each by activation patching and attribution patching."""
    if batch_size < 1:
        raise InterpError("batch_size must be >= 1")
    clean_ids, corrupt_ids = prompt_ids(model, clean), prompt_ids(model, corrupt)
    if len(clean_ids) != len(corrupt_ids):
        raise InterpError(
            f"the clean prompt is {len(clean_ids)} tokens and the corrupted one "
            f"{len(corrupt_ids)}; patching needs the same length (reword one of them)"
        )
    clean_ids, corrupt_ids = (ids.to(input_device(model)) for ids in (clean_ids, corrupt_ids))
    answer_id = token_id(model, answer, "answer")
    wrong_id = None if wrong is None else token_id(model, wrong, "wrong")
    metric = pa.answer_metric(answer_id, wrong_id)
    n_layers, n_heads, n_pos = model.cfg.n_layers, model.cfg.n_heads, len(clean_ids)
    hook_names = model.hook_dict
    grid_cells = {}
    for grid in grids:
        found = [c for c in pa.cells(grid, n_layers, n_pos, n_heads) if c.name in hook_names]
        if found:  # an attention-only model has no MLP grid
            grid_cells[grid] = found
    names = sorted({c.name for found in grid_cells.values() for c in found})

    start = time.perf_counter()
    clean_acts, clean_logits = capture(model, clean_ids, names)
    grads = with_grad(model, corrupt_ids, names, lambda logits: metric(logits).sum())
    seconds = {"attribution": time.perf_counter() - start}
    m_clean, m_corrupt = float(metric(clean_logits)[0]), grads.metric
    frames = {}
    for grid, found in grid_cells.items():
        start = time.perf_counter()
        exact = patched_metrics(model, corrupt_ids, clean_acts, found, metric, batch_size)
        seconds[grid] = time.perf_counter() - start
        clean_float = {n: clean_acts[n].float() for n in {c.name for c in found}}
        estimate = pa.attribution(found, clean_float, grads.activations, grads.grads) + m_corrupt
        shape = [max(c.coords[i] for c in found) + 1 for i in range(len(found[0].coords))]
        parts = [
            long_frame(pa.normalise(values, m_clean, m_corrupt).reshape(shape), pa.AXES[grid],
                       "score").assign(method=method)
            for method, values in zip(METHODS, (exact, estimate))
        ]  # fmt: skip
        frame = pd.concat(parts, ignore_index=True)
        if grid == "resid":
            frame.insert(2, "token", frame["pos"].map(dict(enumerate(_texts(model, clean_ids)))))
        frames[grid] = frame[["method", *[c for c in frame.columns if c != "method"]]]
    kind = "log p(answer)" if wrong_id is None else "logit(answer) - logit(wrong)"
    return Patching(frames, m_clean, m_corrupt, kind, _texts(model, clean_ids),
                    _texts(model, corrupt_ids), seconds)  # fmt: skip


def _texts(model, ids: torch.Tensor) -> list[str]:
    return token_texts(model.tokenizer, ids)


def capture(model, ids: torch.Tensor, names: Sequence[str]):
    """({hook name: activation [1 pos ...]}, logits [1 pos vocab]) of one no-grad forward."""
    kept: dict[str, torch.Tensor] = {}

    def keep(name):
        return lambda tensor, hook: kept.__setitem__(name, tensor.detach().clone())

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, keep(name)) for name in names]):
        logits = model(ids[None])
    return kept, logits


def patched_metrics(model, ids, source, cell_list, metric, batch_size: int) -> torch.Tensor:
    """[cells]: the metric with each cell of `source` ([1 pos ...] activations) patched into a
    run of `ids`, `batch_size` cells (copies of `ids`) per forward."""
    out = []
    for start in range(0, len(cell_list), batch_size):
        chunk = cell_list[start : start + batch_size]
        rows: dict[str, list] = {}
        for row, cell in enumerate(chunk):
            rows.setdefault(cell.name, []).append((row, cell.index))
        hooks = [(name, _patcher(picked, source[name])) for name, picked in rows.items()]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            out.append(metric(model(ids[None].expand(len(chunk), -1))))
    return torch.cat(out).float()


def _patcher(rows: list[tuple[int, tuple]], source: torch.Tensor):
    """A hook writing `source[0][index]` into batch row `row` for each (row, index)."""

    def hook(tensor: torch.Tensor, hook) -> torch.Tensor:
        tensor = tensor.clone()
        for row, index in rows:
            tensor[row][index] = source[0][index].to(tensor.dtype)
        return tensor

    return hook
