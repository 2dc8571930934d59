"""Activation patching, the pure part: the metric, its normalisation, the grids' cells and the
attribution-patching estimate. `interp.runs.patching` runs the model.

Patching copies one activation of the clean run into the corrupted run and measures the answer
at the last position: the logit difference answer - wrong, or log p(answer) with no wrong token.
Scores are normalised, (m - m_corrupt) / (m_clean - m_corrupt): 0 is the corrupted run, 1 the
clean one.

Attribution patching (Nanda 2023; Syed et al. 2023) replaces each patched run by its first-order
estimate around the corrupted run: m(patched) - m_corrupt ~ grad . (a_clean - a_corrupt), with the
gradient taken once on the corrupted run, so every cell of every grid costs one forward and one
backward together.

Grids (TransformerLens hook names):
- resid: blocks.{l}.hook_resid_pre at one position, layer x pos;
- heads: blocks.{l}.attn.hook_z of one head at every position, layer x head;
- mlp: blocks.{l}.hook_mlp_out at every position, layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from interp.errors import InterpError
from interp.vocab import log_probs

GRIDS = ("resid", "heads", "mlp")
AXES = {"resid": "layer pos", "heads": "layer head", "mlp": "layer"}


@dataclass(frozen=True)
class Cell:
    """One patch: at hook `name`, the slice `index` of every batch row (after the batch axis)."""

    grid: str
    name: str
    index: tuple
    coords: tuple[int, ...]  # the cell's place in its grid, in AXES order


def cells(grid: str, n_layers: int, n_pos: int, n_heads: int) -> list[Cell]:
    """Every cell of a grid, in C order of its axes."""
    everything = slice(None)
    if grid == "resid":
        return [Cell(grid, f"blocks.{layer}.hook_resid_pre", (pos,), (layer, pos))
                for layer in range(n_layers) for pos in range(n_pos)]  # fmt: skip
    if grid == "heads":
        return [Cell(grid, f"blocks.{layer}.attn.hook_z", (everything, head), (layer, head))
                for layer in range(n_layers) for head in range(n_heads)]  # fmt: skip
    if grid == "mlp":
        return [Cell(grid, f"blocks.{n}.hook_mlp_out", (), (n,)) for n in range(n_layers)]
    raise InterpError(f"unknown grid {grid!r}: use one of {', '.join(GRIDS)}")


def answer_metric(answer: int, wrong: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """logits [batch pos vocab] -> [batch]: at the last position, logit(answer) - logit(wrong),
    or log p(answer) when `wrong` is None."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float()
        if wrong is None:
            return log_probs(last)[:, answer]
        return last[:, answer] - last[:, wrong]

    return metric


def normalise(values: torch.Tensor, clean: float, corrupt: float) -> torch.Tensor:
    """(m - corrupt) / (clean - corrupt): 0 is the corrupted run, 1 the clean one."""
    if abs(clean - corrupt) < 1e-6:
        raise InterpError(
            f"the clean and corrupted prompts give the same metric ({clean:.4g}): nothing to "
            "patch; choose prompts (or answer tokens) the model tells apart"
        )
    return (values - corrupt) / (clean - corrupt)


def attribution(
    cell_list: list[Cell],
    clean: dict[str, torch.Tensor],
    corrupt: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
) -> torch.Tensor:
    """[cells]: grad . (a_clean - a_corrupt) over each cell's slice (un-normalised).

    `clean`, `corrupt`, `grads`: hook name -> [1 pos ...] activations / gradients (the gradient
    of the metric on the corrupted run)."""
    return torch.stack([
        (grads[c.name][0][c.index] * (clean[c.name][0] - corrupt[c.name][0])[c.index]).sum()
        for c in cell_list
    ])  # fmt: skip


def compare(frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """One grid's cells with both methods side by side (activation, attribution, gap =
    attribution - activation), largest |gap| first, and their Pearson correlation."""
    axes = [c for c in ("layer", "pos", "token", "head") if c in frame.columns]
    pair = frame.pivot_table(index=axes, columns="method", values="score").reset_index()
    pair.columns.name = None
    pair["gap"] = pair["attribution"] - pair["activation"]
    pair = pair.sort_values("gap", key=abs, ascending=False, ignore_index=True)
    return pair, float(pair["activation"].corr(pair["attribution"]))
