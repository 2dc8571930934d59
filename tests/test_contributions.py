"""The contribution graph: proximity shares by hand, and the head writes that add up to the
attention output the trace captured."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analysis.contributions import component_grid, contributions, proximity_shares


def test_proximity_shares_by_hand():
    total = torch.tensor([3.0, 4.0])  # |total| = 5
    parts = torch.tensor([[3.0, 0.0], [0.0, 4.0], [-1.0, 0.0]])
    # 5 - |(0, 4)| = 1, 5 - |(3, 0)| = 2, 5 - |(4, 4)| < 0 -> 0
    assert proximity_shares(total, parts).tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])


@pytest.mark.parametrize("name", ["attn-only-2l", "tiny-moe"])
def test_shares_of_real_writes(name):
    model = interp.load(name)
    prompt = torch.tensor([5, 9, 2, 7, 5, 9]) if model.tokenizer is None else "def f(x): return x"
    run = interp.trace(model, prompt, capture=("residual",))
    t, W_O = run.records[0].tensors, run.weights["W_O"].detach()
    # The heads' writes z_h W_O^h plus b_O are the attention output the model added.
    writes = torch.einsum("lphe,lhed->lpd", t["z"].float(), W_O.float())
    try:
        bias = model.b_O.detach()[:, None]
    except AttributeError:  # a bias-free output projection (tiny-moe)
        bias = 0.0
    torch.testing.assert_close(writes + bias, t["attn_out"].float(), atol=1e-4, rtol=1e-4)
    frame = contributions(t["resid"], t["attn_out"], t["mlp_out"], t["z"], W_O, pos=-1)
    sums = frame.groupby(["layer", "stage"])["share"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-5)
    stages = set(frame["stage"])
    assert stages == ({"attn"} if name == "attn-only-2l" else {"attn", "mlp"})
    assert (frame["kept"] == (frame["share"] >= 0.04)).all()
    grid, labels = component_grid(frame)
    assert grid.shape == (len(labels), model.cfg.n_layers)
