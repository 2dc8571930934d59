"""Several residual streams (DeepSeek-V4's mHC): what the trace keeps of them, and the checks.

A V4 layer keeps `hc_mult` = N streams [pos N d]. Before each sub-block (attention, then the
MoE), transformers' `DeepseekV4HyperConnection` computes from the streams themselves, per token:
  pre  [N]    collapse weights: the sub-block reads sum_s pre[s] * streams[s] (the "collapsed"
              stream; what deltas, the lens and DLA read in a single-stream model)
  post [N]    expand weights: the sub-block's output o [d] is written to stream s as post[s] * o
  comb [N N]  the mixing matrix, made doubly stochastic by Sinkhorn: streams_after =
              post (x) o + comb^T . streams (DeepseekV4DecoderLayer's forward)
The bridge hooks post and comb (blocks.{l}.attn_hc / mlp_hc .hook_post / .hook_comb); pre is
consumed inside the module, so `hc_pre` recomputes it from the module's own weights and the
hooked streams (the collapsed stream it implies is checked against the module's output).

Tensors of a traced record (sub-block 0 = attention, 1 = MoE):
  resid [layer+1 pos N d], resid_mid [layer pos N d], attn_out / mlp_out [layer pos d],
  hc_pre / hc_post [layer 2 pos N], hc_comb [layer 2 pos N N], resid_read [layer+1 pos d]
  (`reads`: the collapsed stream each layer reads, then the one the head reads out),
  hc_head [pos N] (the model's final collapse weights, `head_pre`: what direct logit
  attribution freezes to make the logit linear in the last streams).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from interp.vocab import long_frame

SUB_BLOCKS = ("attn", "mlp")  # the bridge names the MoE's hyper-connection mlp_hc


def hf_hyper_connection(model, layer: int, sub: int) -> torch.nn.Module:
    """transformers' DeepseekV4HyperConnection under blocks.{layer}.{attn,mlp}_hc."""
    module = getattr(model.blocks[layer], f"{SUB_BLOCKS[sub]}_hc")
    return getattr(module, "original_component", None) or module


def hc_pre(module: torch.nn.Module, streams: torch.Tensor) -> torch.Tensor:
    """[B T N] collapse weights for streams [B T N d], as DeepseekV4HyperConnection.forward
    computes them (its first N projected coefficients), in float32."""
    n = module.hc_mult
    flat = module.input_norm(streams.reshape(*streams.shape[:2], -1).float())
    pre_w = F.linear(flat, module.fn.float()[:n])
    return torch.sigmoid(pre_w * module.scale[0].float() + module.base[:n].float()) + module.hc_eps


def head_pre(module: torch.nn.Module, streams: torch.Tensor) -> torch.Tensor:
    """[B T N] the final collapse weights of DeepseekV4HyperHead (the model's hc_head) for the
    last streams [B T N d], as its forward computes them, in float32."""
    flat = module.input_norm(streams.flatten(2).float())
    mixes = F.linear(flat, module.hc_fn.float())
    return torch.sigmoid(mixes * module.hc_scale.float() + module.hc_base.float()) + module.eps


def reads(tensors: dict, head_read: torch.Tensor) -> torch.Tensor:
    """resid_read [layer+1 pos d]: the collapsed stream each layer's attention reads
    (sum_s pre[s] streams[s]), then what the model's hc_head reads out (head_read [1 pos d]):
    the single stream that deltas and the lens of a one-stream model would follow."""
    attn_reads = (tensors["hc_pre"][:, 0, ..., None] * tensors["resid"][:-1]).sum(-2)
    return torch.cat([attn_reads, head_read])


def rebuild(streams: torch.Tensor, out: torch.Tensor, post: torch.Tensor, comb: torch.Tensor):
    """The streams after a sub-block [.. N d]: post (x) out + comb^T . streams, from the streams
    before it [.. N d], its output [.. d], post [.. N] and comb [.. N N]."""
    return post[..., None] * out[..., None, :] + comb.transpose(-1, -2) @ streams


def before_after(tensors: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per (layer, sub-block) in forward order: the streams before and after it [pos N d]."""
    resid, mid = tensors["resid"], tensors["resid_mid"]
    out = []
    for layer in range(len(mid)):
        out += [(resid[layer], mid[layer]), (mid[layer], resid[layer + 1])]
    return out


def rebuild_error(tensors: dict) -> float:
    """Max over sub-blocks of |rebuilt - model's streams| / max |model's streams|."""
    worst = 0.0
    outs = [tensors[name][layer] for layer in range(len(tensors["resid_mid"]))
            for name in ("attn_out", "mlp_out")]  # fmt: skip
    for i, (before, after) in enumerate(before_after(tensors)):
        layer, sub = divmod(i, 2)
        post, comb = tensors["hc_post"][layer, sub], tensors["hc_comb"][layer, sub]
        error = (rebuild(before, outs[i], post, comb) - after).abs().max()
        worst = max(worst, (error / after.abs().max()).item())
    return worst


def stochastic_error(comb: torch.Tensor) -> float:
    """Max |row sum - 1| and |column sum - 1| over every comb [.. N N]."""
    rows, cols = comb.sum(-1), comb.sum(-2)
    return max((rows - 1).abs().max().item(), (cols - 1).abs().max().item())


HC_COLUMNS = ["prompt", "pos", "token", "layer", "block", "weight", "stream", "to_stream", "value"]


def hc_rows(tensors: dict, tokens) -> pd.DataFrame:
    """One prompt's `hc` frame. weight "pre": stream's share of the sub-block's input; "post":
    the share of the sub-block's output written into stream; "comb": how much of stream
    (before) goes into to_stream (after), comb[stream, to_stream]. to_stream = stream for
    pre and post."""
    parts = []
    for weight in ("pre", "post", "comb"):
        values = tensors[f"hc_{weight}"]  # [layer sub pos N] or [layer sub pos N N]
        if weight != "comb":
            values = torch.diag_embed(values)  # the diagonal rows are kept below
        grid = long_frame(values, "layer block pos stream to_stream", "value")
        if weight != "comb":
            grid = grid[grid.stream == grid.to_stream]
        grid["weight"] = weight
        parts.append(grid)
    out = pd.concat(parts, ignore_index=True)
    out["block"] = np.array(SUB_BLOCKS)[out["block"]]
    out["token"] = tokens[out["pos"]]
    return out
