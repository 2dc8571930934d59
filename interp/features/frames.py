"""The trace's feature frames, from what `Attachment.fill` left in each prompt's tensors.

features:       prompt pos token layer hook dictionary feature activation (top-k per token,
                zeros dropped, largest first)
feature_error:  prompt pos token layer hook dictionary l0 norm error relative
                (norm: the hooked activation's; error: |activation - reconstruction|)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from interp.text import token_texts

FEATURE_COLUMNS = ["prompt", "pos", "token", "layer", "hook", "dictionary", "feature",
                   "activation"]  # fmt: skip
ERROR_COLUMNS = ["prompt", "pos", "token", "layer", "hook", "dictionary", "l0", "norm", "error",
                 "relative"]  # fmt: skip


def _each(trace):
    """(prompt, dictionary meta, its tensors, token texts) for every captured dictionary."""
    for p, record in enumerate(trace.records):
        texts = None
        for i, d in enumerate(trace.meta.get("features", [])):
            t = {n: record.tensors[f"features.{i}.{n}"]
                 for n in ("values", "indices", "l0", "error", "norm")}  # fmt: skip
            if texts is None:
                texts = np.array(token_texts(trace.tokenizer, record.ids), dtype=object)
            yield p, d, t, texts


def _head(p, d, pos, texts) -> dict:
    return {"prompt": p, "pos": pos, "token": texts[pos], "layer": -1 if d["layer"] is None
            else d["layer"], "hook": d["hook"], "dictionary": d["name"]}  # fmt: skip


def features_frame(trace) -> pd.DataFrame:
    out = []
    for p, d, t, texts in _each(trace):
        values, indices = t["values"].numpy(), t["indices"].numpy()
        pos, slot = np.nonzero(values)
        frame = pd.DataFrame(_head(p, d, pos, texts))
        frame["feature"] = indices[pos, slot].astype(np.int64)
        frame["activation"] = values[pos, slot].astype(np.float32)
        out.append(frame)
    if not out:
        return pd.DataFrame(columns=FEATURE_COLUMNS)
    frame = pd.concat(out, ignore_index=True)[FEATURE_COLUMNS]
    order = frame.sort_values(["prompt", "dictionary", "pos", "activation"],
                              ascending=[True, True, True, False], kind="stable")  # fmt: skip
    return order.reset_index(drop=True)


def feature_error_frame(trace) -> pd.DataFrame:
    out = []
    for p, d, t, texts in _each(trace):
        pos = np.arange(len(t["l0"]))
        frame = pd.DataFrame(_head(p, d, pos, texts))
        frame["l0"] = t["l0"].numpy().astype(np.int64)
        norm, error = t["norm"].numpy(), t["error"].numpy()
        frame["norm"], frame["error"] = norm, error
        frame["relative"] = (error / np.where(norm > 0, norm, np.nan)).astype(np.float32)
        out.append(frame)
    if not out:
        return pd.DataFrame(columns=ERROR_COLUMNS)
    return pd.concat(out, ignore_index=True)[ERROR_COLUMNS]
