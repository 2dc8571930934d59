"""Assembling a run's tensors: one prompt's slice of a batch capture, and the prompt's capture
joined with one capture per generated token (KV-cache steps), as if from one forward pass."""

from __future__ import annotations

import torch

from interp.trace.hooks import Capture


def slice_capture(cap: Capture, b: int, n: int, model, keys: int | None = None, release=False):
    """Prompt `b`'s tensors: `n` query positions and `keys` key positions (default `n`; a
    KV-cache step has one query and every earlier key).

    `release`: this is the capture's last reader, so each stacked layer tensor is dropped from
    the capture once copied (a long prompt's capture then never exists twice in memory); the
    small top-source pairs and the final resid_post stay until the capture goes.
    """
    keys = keys or n
    layers = range(model.cfg.n_layers)

    def stack(store: dict, cut) -> torch.Tensor:
        """Layer-major stack of `cut(tensor)`; hooks fire, and so fill `store`, in layer order."""
        out, count = None, len(store)
        for j, layer in enumerate(list(store)):
            part = cut(store.pop(layer) if release else store[layer])
            if out is None:
                out = part.new_empty((count, *part.shape))
            out[j] = part
        return out

    out: dict[str, torch.Tensor] = {}
    if cap.resid_pre:
        final = cap.resid_post[layers[-1]][b, :n]
        pre = stack(cap.resid_pre, lambda t: t[b, :n])
        out["resid"] = torch.cat([pre, final[None]])
        out["attn_out"] = stack(cap.attn_out, lambda t: t[b, :n])
        out["mlp_out"] = (
            stack(cap.mlp_out, lambda t: t[b, :n]) if cap.mlp_out else torch.zeros_like(pre)
        )
        out["z"] = stack(cap.z, lambda t: t[b, :n])
    if cap.key_mass:
        out["key_mass"] = stack(cap.key_mass, lambda t: t[b, :, :keys])
        out["query_entropy"] = stack(cap.query_entropy, lambda t: t[b, :, :n])
        out["top_weights"] = torch.stack([cap.top_sources[i][0][b, :, :n] for i in layers])
        out["top_keys"] = torch.stack([cap.top_sources[i][1][b, :, :n] for i in layers])
        if cap.query_rows:
            out["query_rows"] = stack(cap.query_rows, lambda t: t[b, :, :, :keys])
        if cap.patterns:
            out["patterns"] = stack(cap.patterns, lambda t: t[b, :, :n, :keys])
    if cap.router_logits:
        out["router_logits"] = stack(cap.router_logits, lambda t: t[b, :n])
    return out


def _pad_keys(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, total - t.shape[-1]))


def concat_steps(parts: list[dict[str, torch.Tensor]], total: int) -> dict[str, torch.Tensor]:
    """Join the prompt's capture with one capture per generated token (KV-cache steps)."""
    out: dict[str, torch.Tensor] = {}
    first = parts[0]
    by_position = {"resid": 1, "attn_out": 1, "mlp_out": 1, "z": 1, "router_logits": 1,
                   "query_entropy": 2, "top_weights": 2, "top_keys": 2}  # fmt: skip
    for name, axis in by_position.items():
        if name in first:
            out[name] = torch.cat([p[name] for p in parts], dim=axis)
    if "key_mass" in first:
        out["key_mass"] = sum(_pad_keys(p["key_mass"], total) for p in parts)
        out["query_rows"] = torch.cat([_pad_keys(p["query_rows"], total) for p in parts], dim=2)
    if "patterns" in first:
        n0 = first["patterns"].shape[-1]
        full = _pad_keys(first["patterns"], total)
        rows = [_pad_keys(p["patterns"], total) for p in parts[1:]]
        out["patterns"] = torch.cat([full] + rows, dim=2)
        assert out["patterns"].shape[2] == total and n0 + len(rows) == total
    return out
