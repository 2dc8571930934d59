"""interp's own routing written as a serving engine records it (interp.survey.recorded), so
the recorded-routing survey can be checked end to end against a model survey.

`trace_routing(trace)` gives the routing a trace captured (capture "routing"), one request
per prompt. `export_routing(model, out, data=...)` runs the model over exactly the windows
and batches a survey with the same data, seq_len, batch_size and tokens reads (the same
forward, so the same top-k, ties included) and writes, per window, its token ids and the
experts each MoE layer chose: [tokens, MoE layers, top_k] int16, vLLM's layout.
`write_routing` writes any list of `Recorded` requests: .jsonl (vLLM's fields, nested
lists), .npz (a bulk shard) or .parquet (routing as int16 bytes).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from interp.errors import InterpError
from interp.files import write_atomic
from interp.survey import data as data_mod
from interp.survey.batch import collate
from interp.survey.recorded import SUFFIXES, Recorded
from interp.trace.routers import capture_hook, routers


def export_routing(model, out, data=(), *, seq_len: int = 256, batch_size: int = 8,
                   tokens: int | None = None) -> Path:  # fmt: skip
    """The routing of `model` over the survey's windows of `data`, written to `out`."""
    out = _check_out(out)
    found = routers(model)
    if not found:
        raise InterpError(f"{getattr(model, 'interp_name', 'the model')} has no routed experts")
    corpus = data_mod.Corpus([data] if isinstance(data, str | Path) else list(data))
    bos = data_mod.bos_token(model)
    windows = data_mod.windows(corpus, model.tokenizer, seq_len, bos, tokens)
    layers = list(found)
    chosen: dict[int, torch.Tensor] = {}

    def keep(i):
        return lambda x, decision: chosen.__setitem__(i, decision.experts.detach().cpu())

    hooks = [found[layer].module.register_forward_hook(capture_hook(found[layer], keep(i)))
             for i, layer in enumerate(layers)]  # fmt: skip
    requests = []
    try:
        with torch.no_grad():
            for chunk in data_mod.batches(windows, batch_size):
                batch = collate(chunk, corpus.domains, 0, next(model.parameters()).device)
                model(batch.ids, return_type="logits")
                per_pos = torch.stack([chosen[i] for i in range(len(layers))], 1)
                per_pos = per_pos.view(*batch.ids.shape, len(layers), -1)
                for row, window in enumerate(chunk):
                    experts = per_pos[row, : len(window.ids)].numpy().astype(np.int16)
                    requests.append(Recorded(window.ids.numpy(), experts, window.domain))
    finally:
        for handle in hooks:
            handle.remove()
    return write_routing(requests, out)


def trace_routing(trace, domains: list[str] | None = None) -> list[Recorded]:
    """Per prompt of `trace` (with its routing captured), its ids and chosen experts;
    `domains`: a label per prompt (default "all")."""
    requests = []
    for p, record in enumerate(trace.records):
        if "router_experts" not in record.tensors:
            raise InterpError("the trace holds no routing: capture 'routing'")
        experts = record.tensors["router_experts"].permute(1, 0, 2)  # [pos, layer, k]
        domain = domains[p] if domains is not None else "all"
        requests.append(Recorded(record.ids.numpy(), experts.numpy().astype(np.int16), domain))
    return requests


def write_routing(requests: list[Recorded], out) -> Path:
    out = _check_out(out)
    if out.suffix == ".npz":
        buffer = io.BytesIO()
        lengths = [len(r.ids) for r in requests]
        np.savez(buffer, token_ids=np.concatenate([r.ids for r in requests]).astype(np.int32),
                 routed_experts=np.concatenate([r.experts for r in requests]).astype(np.int16),
                 offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                 domains=np.array([r.domain for r in requests]))  # fmt: skip
        write_atomic(out, buffer.getvalue())
    elif out.suffix == ".parquet":
        import pandas as pd

        frame = pd.DataFrame({
            "prompt_token_ids": [r.ids.tolist() for r in requests],
            "prompt_routed_experts": [r.experts.astype("<i2").tobytes() for r in requests],
            "domain": [r.domain for r in requests],
        })  # fmt: skip
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        write_atomic(out, buffer.getvalue())
    else:
        lines = [json.dumps({"prompt_token_ids": r.ids.tolist(),
                             "prompt_routed_experts": r.experts.tolist(), "domain": r.domain})
                 for r in requests]  # fmt: skip
        write_atomic(out, "\n".join(lines) + "\n")
    return out


def _check_out(out) -> Path:
    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise InterpError(f"{out}: routing is written as {', '.join(SUFFIXES)}")
    return out
