"""Assembling a run's tensors: one prompt's slice of a batch capture, and the prompt's capture
joined with one capture per generated token (KV-cache steps), as if from one forward pass;
the same for raw hook captures; per-token log-probs and entropies from the logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from interp.trace import streams
from interp.trace.hooks import ROUTER_TENSORS, Capture
from interp.vocab import log_probs

STATS_ELEMENTS = 2**21  # logits per chunk of the per-token log-prob and entropy (8 MB)


def slice_capture(cap: Capture, b: int, n: int, keys: int | None = None) -> dict[str, torch.Tensor]:
    """Prompt `b`'s tensors: `n` query positions and `keys` key positions (default `n`; a
    KV-cache step has one query and every earlier key).

    With one prompt in the batch these are views of the capture's buffers (no copy); with
    several, each prompt gets its own copy, so that no prompt's tensors keep the batch alive.
    """
    keys = keys or n

    def cut(stack, *index) -> torch.Tensor:  # stack.data [layer batch ...]
        part = stack.data[(slice(None), b, *index)]
        return part.clone() if stack.data.shape[1] > 1 else part

    out: dict[str, torch.Tensor] = {}
    if cap.resid:
        out["resid"] = cut(cap.resid, slice(n))
        for name in ("attn_out", "mlp_out"):  # zero where no layer has that sub-block
            stack = getattr(cap, name)
            out[name] = cut(stack, slice(n)) if stack else torch.zeros_like(out["resid"][:-1])
        if cap.mamba_out:
            out["mamba_out"] = cut(cap.mamba_out, slice(n))
        if cap.resid_mid:  # several streams (interp.trace.streams)
            out["resid_mid"] = cut(cap.resid_mid, slice(n))
            for name in ("hc_pre", "hc_post", "hc_comb"):  # [layer sub-block pos ...]
                out[name] = cut(getattr(cap, name), slice(n)).unflatten(0, (-1, 2))
            out["resid_read"] = streams.reads(out, cut(cap.head_read, slice(n)))
            out["hc_head"] = cut(cap.head_pre, slice(n))[0]  # [pos N]
        if cap.z:  # hybrids' bridges expose no per-head z (V4's: see interp.trace.v4_attention)
            out["z"] = cut(cap.z, slice(n))
    if cap.key_mass:
        out["key_mass"] = cut(cap.key_mass, slice(None), slice(keys))
        out["query_entropy"] = cut(cap.query_entropy, slice(None), slice(n))
        out["top_weights"] = cut(cap.top_weights, slice(None), slice(n))
        out["top_keys"] = cut(cap.top_keys, slice(None), slice(n))
        if cap.query_rows:
            out["query_rows"] = cut(cap.query_rows, slice(None), slice(None), slice(keys))
        if cap.patterns:
            out["patterns"] = cut(cap.patterns, slice(None), slice(n), slice(keys))
        if cap.compressed:  # DeepSeek-V4 (interp.trace.v4_attention)
            out["compressed_patterns"] = cut(cap.compressed, slice(None), slice(n), slice(keys))
    for name in ROUTER_TENSORS:
        if getattr(cap, name):
            out[name] = cut(getattr(cap, name), slice(n))
    return out


def _pad_keys(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, total - t.shape[-1]))


def concat_steps(parts: list[dict[str, torch.Tensor]], total: int) -> dict[str, torch.Tensor]:
    """Join the prompt's capture with one capture per generated token (KV-cache steps)."""
    out: dict[str, torch.Tensor] = {}
    first = parts[0]
    by_position = {"resid": 1, "attn_out": 1, "mlp_out": 1, "mamba_out": 1, "z": 1,
                   "query_entropy": 2, "top_weights": 2, "top_keys": 2}  # fmt: skip
    by_position.update(dict.fromkeys(ROUTER_TENSORS, 1))
    by_position.update(resid_mid=1, resid_read=1, hc_pre=2, hc_post=2, hc_comb=2, hc_head=0)
    for name, axis in by_position.items():
        if name in first:
            out[name] = torch.cat([p[name] for p in parts], dim=axis)
    if "key_mass" in first:
        out["key_mass"] = sum(_pad_keys(p["key_mass"], total) for p in parts)
        out["query_rows"] = torch.cat([_pad_keys(p["query_rows"], total) for p in parts], dim=2)
    for name in ("patterns", "compressed_patterns"):
        if name in first:
            n0 = first[name].shape[-1]
            full = _pad_keys(first[name], total)
            rows = [_pad_keys(p[name], total) for p in parts[1:]]
            out[name] = torch.cat([full] + rows, dim=2)
            assert out[name].shape[2] == total and n0 + len(rows) == total
    return out


def is_pattern(name: str) -> bool:
    # TL's [batch, head, query, key] hooks; every other hook is [batch, pos, ...].
    return name.endswith(("hook_pattern", "hook_attn_scores"))


def positions(name: str, t: torch.Tensor, n: int) -> torch.Tensor:
    """One prompt's raw capture (batch axis gone) cut to its n real positions."""
    return t[:, :n, :n] if is_pattern(name) else t[:n]


def join_steps(name: str, steps: list[torch.Tensor]) -> torch.Tensor:
    """A raw capture over prompt + generated tokens, as if from one forward pass.

    Each KV-cache step sees one query; attention rows are zero-padded to the final key count.
    """
    if not is_pattern(name):
        return torch.cat(steps, dim=0)
    keys = steps[-1].shape[-1]
    return torch.cat([F.pad(t, (0, keys - t.shape[-1])) for t in steps], dim=-2)


def token_stats(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of each token given its prefix, and the entropy of the predicting distribution:
    computed in float32 where the logits are, returned on the CPU."""
    chosen, ent, ids = [], [], ids.to(logits.device)
    # In row chunks small enough for the allocator to reuse (a few MB): a [pos vocab] temporary
    # would triple the logits' memory, and fresh large blocks cost a page fault per 4 kB.
    rows = max(1, STATS_ELEMENTS // logits.shape[-1])
    for start in range(0, len(ids) - 1, rows):
        logp = log_probs(logits[start : start + rows])[: len(ids) - 1 - start]
        chosen.append(logp.gather(-1, ids[start + 1 : start + 1 + rows, None])[:, 0])
        ent.append(-(logp.exp() * logp).sum(-1))
    nan = torch.tensor([float("nan")])
    return torch.cat([nan, *[c.cpu() for c in chosen]]), torch.cat([nan, *[e.cpu() for e in ent]])
