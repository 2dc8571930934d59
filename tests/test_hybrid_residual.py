"""The residual section on a hybrid (the trained tiny-hybrid): Mamba2 writes (mamba_out) are
plotted and tabled beside attention and MLP writes, each a median of the trace's own tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp.analysis.deltas import deltas
from interp.plots.compare import by_layer
from interp.plots.residual import norms_plot
from interp.report.stream import per_layer_norms

TEXT = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def hybrid():
    model = interp.load("tiny-hybrid")
    return model, interp.trace(model, TEXT, max_new_tokens=2)


def test_norms_by_layer_hold_the_mamba_writes(hybrid):
    model, trace = hybrid
    kinds = [k[0] for k in trace.facts.layer_kinds]
    norms = per_layer_norms(trace.residual)
    assert list(norms.columns) == ["prompt", "layer", "resid_post", "attn_out", "mlp_out",
                                   "mamba_out"]  # fmt: skip
    for stage, kind in (("mamba_out", "mamba2"), ("attn_out", "attention")):
        has = np.array(kinds) == kind
        values = norms[stage].to_numpy()
        assert np.isnan(values[~has]).all()  # a hybrid layer writes through one sub-block
        # pandas' median of an even count averages the middle two; torch's takes the lower.
        hand = trace.tensor(stage, 0)[has][:, 1:].norm(dim=-1).double().quantile(0.5, dim=-1)
        np.testing.assert_allclose(values[has], hand.numpy(), rtol=1e-6)
    fig = by_layer(norms, ["code"])
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    mamba = lines["code Mamba2"]
    assert list(mamba.get_xdata()) == [i for i, k in enumerate(kinds) if k == "mamba2"]
    np.testing.assert_allclose(mamba.get_ydata(), norms["mamba_out"].dropna(), rtol=0)
    assert list(lines["code attention"].get_xdata()) == [kinds.index("attention")]


def test_deltas_hold_the_mamba_write_against_the_stream(hybrid):
    model, trace = hybrid
    frame = deltas(trace)
    resid, mamba = trace.tensor("resid", 0), trace.tensor("mamba_out", 0)
    writes = trace.tensor("attn_out", 0) + trace.tensor("mlp_out", 0) + mamba
    assert torch.allclose(resid[:-1] + writes, resid[1:], atol=1e-5)  # the three writes sum up
    hand = (mamba.double().norm(dim=-1) / resid[:-1].double().norm(dim=-1)).reshape(-1)
    np.testing.assert_allclose(frame["mamba_rel"], hand.numpy(), rtol=1e-6)
    lines = [line.get_label() for line in norms_plot(frame).axes[1].get_lines()]
    assert "Mamba2 write" in lines


def test_report_tables_the_mamba_writes(hybrid, tmp_path):
    from interp.report import build_report

    model, trace = hybrid
    html = build_report(trace, tmp_path / "r.html", model=model, progress=False).read_text()
    assert "|Mamba|" in html and "mamba_rel" in html
    assert "layer of the largest Mamba2 write" in html
