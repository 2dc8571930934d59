"""Dictionaries written in SAELens's format, and the encoder by hand (numpy), for the tests."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save_file

D_IN, D_SAE = 32, 48
HOOK = "blocks.1.hook_resid_pre"


def weights(d_in=D_IN, d_sae=D_SAE, d_out=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_out, generator=g) / d_sae**0.5,
        "b_dec": torch.randn(d_out, generator=g) * 0.1,
        "threshold": torch.rand(d_sae, generator=g) * 0.3,
    }


def write_saelens(directory, architecture, weights, meta_style="v6", **cfg):
    """A SAELens-format directory; `meta_style` puts hook_name where each version did."""
    directory.mkdir(parents=True, exist_ok=True)
    hooks = {"hook_name": cfg.pop("hook_name", HOOK)}
    if "hook_name_out" in cfg:
        hooks["hook_name_out"] = cfg.pop("hook_name_out")
    body = {"architecture": architecture, "d_in": weights["W_enc"].shape[0],
            "d_sae": weights["W_enc"].shape[1], "dtype": "float32", **cfg}  # fmt: skip
    if meta_style == "v6":
        body["metadata"] = hooks
    else:
        body.update(hooks)
    (directory / "cfg.json").write_text(json.dumps(body))
    save_file({n: w.contiguous() for n, w in weights.items()},
              str(directory / "sae_weights.safetensors"))  # fmt: skip
    return directory


def np_encode(x, w, arch, k=None, b_dec_in=True, norm="none"):
    """The encoder by hand, in float64 numpy."""
    x = np.asarray(x, np.float64)
    W = {n: np.asarray(t, np.float64) for n, t in w.items()}
    if norm == "constant_norm_rescale":
        x = x * np.sqrt(x.shape[-1]) / np.linalg.norm(x, axis=-1, keepdims=True)
    elif norm == "layer_norm":
        c = x - x.mean(-1, keepdims=True)
        x = c / (c.std(-1, ddof=1, keepdims=True) + 1e-5)
    if b_dec_in:
        x = x - W["b_dec"]
    pre = x @ W["W_enc"] + W["b_enc"]
    if arch == "standard":
        return np.maximum(pre, 0)
    if arch == "jumprelu":
        return np.where(pre > W["threshold"], np.maximum(pre, 0), 0)
    out = np.zeros_like(pre)
    for row in range(len(pre)):
        top = np.argsort(-pre[row])[:k]
        out[row, top] = np.maximum(pre[row, top], 0)
    return out
