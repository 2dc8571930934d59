"""The per-step totals of the memory frame (interp.trace.memory): `trace.kv_cache`."""

from __future__ import annotations

from interp.trace.facts import ModelFacts
from interp.trace.memory import memory_rows, registry


def kv_cache_bytes(
    facts: ModelFacts, positions: int, dtype_bytes: int | None = None
) -> tuple[int, int]:
    """(bytes held after `positions` tokens, bytes if every attention layer had one key/value
    head per query head), summed over every layer's memory; MLP and MoE layers add nothing.
    `dtype_bytes` defaults to the model's own dtype (2 in bfloat16, 4 in float32)."""
    held, mha = _totals(memory_rows(facts, positions), facts)
    scale = (dtype_bytes or facts.dtype_bytes) / facts.dtype_bytes
    return int(held * scale), int(mha * scale)


def _totals(rows: list[dict], facts: ModelFacts) -> tuple[int, int]:
    held = sum(r["bytes"] for r in rows)
    mha = sum(r["bytes"] * (facts.group_size if registry()[r["kind"]].grows_with_heads else 1)
              for r in rows)  # fmt: skip
    return held, mha


def summary(rows: list[dict], facts: ModelFacts, step: int, positions: int) -> dict:
    """One step's totals from that step's memory rows."""
    held, mha = _totals(rows, facts)
    return {
        "step": step, "positions": positions, "bytes": held, "mha_bytes": mha,
        "measured_bytes": sum(r.get("measured_bytes", 0) for r in rows),
    }  # fmt: skip
