"""Deltas, logit lens, direct logit attribution and soft lookups: formulas and exact sums."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from interp.analysis.attribution import direct_logit_attribution, final_norm
from interp.analysis.deltas import delta_summary, deltas, write_sizes
from interp.analysis.lens import decision_depth, lasting_agreement, logit_lens
from interp.analysis.lookups import attention_lookups, lookup_summary, neuron_hooks, soft_lookups
from interp.plots.residual import dla_bar, lens_heatmap, lookups_plot, norms_plot

FRANCE = "The capital of France is"
RANDOM_WORDS = "tiger window velvet apple purple elephant"


def test_write_sizes_match_formulas():
    # Two layers, two positions, d = 2: x_1 = x_0 + a_0 + m_0, x_2 = x_1 + a_1 + m_1.
    x0 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    attn = torch.tensor([[[0.0, 1.0], [1.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]])
    mlp = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, -2.0]]])
    x1 = x0 + attn[0] + mlp[0]
    resid = torch.stack([x0, x1, x1 + attn[1] + mlp[1]])
    frame = write_sizes(resid, attn, mlp).set_index(["layer", "pos"])

    row = frame.loc[(0, 0)]  # x0 = (3, 4), x1 = (4, 5)
    assert row["resid_norm"] == pytest.approx(5.0)
    assert row["attn_norm"] == pytest.approx(1.0) and row["attn_rel"] == pytest.approx(0.2)
    assert row["mlp_rel"] == pytest.approx(0.2)
    assert row["cos_next"] == pytest.approx((12 + 20) / (5 * math.sqrt(41)))
    assert row["growth"] == pytest.approx(math.sqrt(41) / 5)
    assert row["is_sink"] and not frame.loc[(0, 1), "is_sink"]
    row = frame.loc[(1, 1)]  # x1 = (2, 1), x2 = (2, -1)
    assert row["mlp_norm"] == pytest.approx(2.0) and row["attn_norm"] == 0.0
    assert row["cos_next"] == pytest.approx(3 / 5)
    assert row["growth"] == pytest.approx(1.0)


def test_delta_summary_separates_the_sink():
    frame = pd.DataFrame({
        "layer": [0, 0, 0], "pos": [0, 1, 2], "is_sink": [True, False, False],
        **{m: [100.0, 1.0, 3.0] for m in ["resid_norm", "attn_norm", "mlp_norm", "attn_rel",
                                          "mlp_rel", "cos_next", "growth"]},
    })  # fmt: skip
    summary = delta_summary(frame).set_index("metric")
    assert summary.loc["resid_norm", "with_sink"] == 3.0
    assert summary.loc["resid_norm", "without_sink"] == 2.0


def test_decision_depth_is_where_the_final_top1_takes_over_for_good():
    top1 = [5, 7, 5, 5]  # agrees at layer 0, loses it at 1, holds from 2 to the end
    lens = pd.DataFrame({"prompt": 0, "pos": 0, "layer": range(4), "top1_id": top1,
                         "top1": [str(t) for t in top1]})  # fmt: skip
    assert decision_depth(lens)["depth"].item() == 2


def test_attention_lookups_effective_keys():
    # One head, three queries: q = 1 reads two keys uniformly, q = 2 one key only.
    entropy = torch.tensor([[[0.0, math.log(2), 0.0]]])
    frame = attention_lookups(entropy).set_index("pos")
    assert list(frame.index) == [1, 2]  # position 0 has a single key: not a lookup
    assert frame.loc[1, "effective"] == pytest.approx(2.0)
    assert frame.loc[1, "concentration"] == pytest.approx(1.0)
    assert frame.loc[2, "concentration"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def france(smollm):
    import interp

    hooks = neuron_hooks(smollm)
    return interp.trace(smollm, FRANCE, capture=("residual", "attention", *hooks.values())), hooks


@pytest.mark.slow
def test_writes_sum_to_the_final_residual(france):
    trace, _ = france
    resid, attn, mlp = (trace.tensor(n) for n in ("resid", "attn_out", "mlp_out"))
    scale = resid.abs().max()
    # float32 sums of values up to ~1e3: compare at 1e-5 of the largest entry.
    assert (resid[0] + attn.sum(0) + mlp.sum(0) - resid[-1]).abs().max() <= 1e-5 * scale
    assert (resid[:-1] + attn + mlp - resid[1:]).abs().max() <= 1e-5 * scale


@pytest.mark.slow
def test_last_layer_lens_is_the_model_output(smollm, france):
    trace, _ = france
    record = trace.records[0]
    lens_logits = trace.readout(trace.tensor("resid")[-1])
    assert (lens_logits[-1] - record.query_logits[0]).abs().max() <= 1e-4
    plain = smollm(record.ids[None])[0]
    assert (lens_logits - plain).abs().max() <= 1e-4
    _, lens = logit_lens(trace, k=3)
    last = lens[lens["layer"] == smollm.cfg.n_layers - 1]
    assert (last["kl"].abs() < 1e-9).all() and (last["rank"] == 0).all()
    expected = plain.double().log_softmax(-1).max(-1).values
    assert torch.allclose(torch.tensor(last["logprob"].to_numpy()), expected, atol=1e-4)


@pytest.mark.slow
def test_dla_components_sum_to_the_logit(smollm, france):
    trace, _ = france
    norm = final_norm(smollm)
    logits = trace.records[0].query_logits[0].double()
    paris, london = int(logits.argmax()), smollm.tokenizer.encode(" London")[0]
    dla = direct_logit_attribution(trace, norm, target=paris)
    assert trace.tokenizer.decode([paris]) == " Paris"
    assert abs(dla["logit"].sum() - logits[paris]) <= 1e-3 * abs(logits[paris])
    diff = direct_logit_attribution(trace, norm, target=paris, other=london)
    real = logits[paris] - logits[london]
    assert abs(diff["logit"].sum() - real) <= 1e-3 * abs(real)
    # Llama has no output biases: the bias row is rounding only.
    assert abs(dla.set_index("component").loc["bias", "logit"]) < 1e-3
    assert isinstance(dla_bar(dla), Figure)


@pytest.mark.slow
def test_predictable_continuations_are_decided_earlier(smollm):
    import interp

    def depths(prompt):
        _, lens = logit_lens(interp.trace(smollm, prompt, capture=("residual",)), k=1)
        return decision_depth(lens).query("pos > 0")["depth"]

    # " of" after "The capital", " the" after "of", ...: decided before the last layers;
    # after random words the lens agrees with the output only at the very end.
    france, random_words = depths(FRANCE), depths(RANDOM_WORDS)
    assert france.median() < random_words.median()
    assert random_words.min() >= smollm.cfg.n_layers - 2


@pytest.mark.slow
def test_mlp_hidden_is_the_down_projection_input(smollm, france):
    trace, hooks = france
    assert len(hooks) == smollm.cfg.n_layers
    hidden = trace.tensor(hooks[3])
    assert hidden.shape[-1] == smollm.cfg.d_mlp
    mlp_out = smollm.blocks[3].mlp.out(hidden)
    assert (mlp_out - trace.tensor("mlp_out")[3]).abs().max() < 1e-4


@pytest.mark.slow
def test_soft_lookups_and_figures(france):
    trace, hooks = france
    lookups = soft_lookups(trace, hooks=hooks)
    assert set(lookups["kind"]) == {"attention", "mlp"}
    assert (lookups["effective"] <= lookups["available"] + 1e-6).all()
    assert ((lookups["concentration"] > 0) & (lookups["concentration"] <= 1 + 1e-9)).all()
    n_layers, n_pos = trace.facts.n_layers, len(trace.records[0].ids)
    mlp = lookups[lookups["kind"] == "mlp"]
    assert mlp["near_zero"].between(0, 1).all() and len(mlp) == n_layers * n_pos
    assert len(lookup_summary(lookups)) == 2 * n_layers
    frame = deltas(trace)
    assert frame["token"].iloc[0] == "The" and len(frame) == n_layers * n_pos
    _, lens = logit_lens(trace, k=1)
    for fig in (lookups_plot(lookups), norms_plot(frame), lens_heatmap(lens)):
        assert isinstance(fig, Figure)


def test_lasting_agreement_is_one_past_the_last_disagreement():
    # Columns: agrees from stream 2; agrees everywhere; never agrees; agrees only at stream 0.
    top1 = torch.tensor([[5, 1, 9, 4], [7, 1, 9, 0], [5, 1, 9, 0]])
    final = torch.tensor([5, 1, 3, 4])
    assert lasting_agreement(top1, final).tolist() == [2, 0, 3, 3]
