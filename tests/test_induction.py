"""The induction scores equal their definitions on hand-built inputs; on smollm2-135m they find
induction heads that ablation confirms."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from interp.analysis.induction import (
    ablation_frame,
    ablation_hooks,
    copy_scores,
    head_scores,
    icl_losses,
    is_induction_head,
    repeated_tokens,
    score_hooks,
    set_effects,
    token_logprobs,
    token_range,
)
from interp.errors import InterpError
from interp.runs import induction as interventions


def one_hot_pattern(T: int, key_of) -> torch.Tensor:
    """[T, T] pattern: query q puts all its weight on key_of(q) (clamped to a causal key)."""
    pattern = torch.zeros(T, T)
    for q in range(T):
        pattern[q, min(max(key_of(q), 0), q)] = 1.0
    return pattern


@pytest.mark.parametrize("has_sink", [False, True])
def test_head_scores_match_definitions(has_sink):
    seq_len, batch = 5, 3
    offset = int(has_sink)
    T = offset + 2 * seq_len
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    heads = [
        one_hot_pattern(T, lambda q: q - seq_len + 1 if q >= offset + seq_len else q),
        one_hot_pattern(T, lambda q: q - 1),
        one_hot_pattern(T, lambda q: q - seq_len if q >= offset + seq_len else q),
        uniform,
    ]
    # [batch, layers=2, heads=2, T, T]
    patterns = torch.stack(heads).view(2, 2, T, T).expand(batch, -1, -1, -1, -1)
    scores = head_scores(patterns, seq_len, has_sink).set_index(["layer", "head"])

    assert scores.loc[(0, 0), "induction"] == pytest.approx(1.0)
    assert scores.loc[(0, 1), "previous_token"] == pytest.approx(1.0)
    assert scores.loc[(1, 0), "duplicate_token"] == pytest.approx(1.0)
    # The previous-token head attends q-1, which is the induction target only if seq_len == 2.
    assert scores.loc[(0, 1), "induction"] == pytest.approx(0.0)
    # Uniform causal attention gives weight 1 / (q + 1) to every key of query q.
    second = range(offset + seq_len, T)
    expected = sum(1 / (q + 1) for q in second) / seq_len
    assert scores.loc[(1, 1), "induction"] == pytest.approx(expected)
    assert scores.loc[(1, 1), "duplicate_token"] == pytest.approx(expected)
    assert scores.loc[(1, 1), "previous_token"] == pytest.approx(
        sum(1 / (q + 1) for q in range(1, T)) / (T - 1)
    )


def test_head_scores_kv_head_and_shape_check():
    patterns = torch.rand(1, 1, 8, 9, 9).softmax(-1)
    scores = head_scores(patterns, 4, has_sink=True, n_kv_heads=2)
    assert list(scores.kv_head) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert list(scores.columns[:3]) == ["layer", "head", "kv_head"]
    with pytest.raises(InterpError):
        head_scores(patterns, 4, has_sink=False)


def test_score_hooks_equal_head_scores_without_keeping_patterns():
    patterns = torch.rand(3, 2, 4, 11, 11).tril().softmax(-1)
    hooks, frame = score_hooks(2, 5, has_sink=True, n_kv_heads=2)
    for layer, (name, hook) in enumerate(hooks):
        assert name == f"blocks.{layer}.attn.hook_pattern"
        # Two calls (two forward passes) pool their rows.
        assert hook(patterns[:1, layer], None) is None
        hook(patterns[1:, layer], None)
    expected = head_scores(patterns, 5, has_sink=True, n_kv_heads=2)
    pd.testing.assert_frame_equal(frame(), expected, atol=1e-6)
    with pytest.raises(RuntimeError, match="not run"):
        score_hooks(2, 5, has_sink=True)[1]()


def test_token_range_avoids_special_ids():
    assert token_range(100, [0, 1, 2, 16, 5]) == (17, 100)
    assert token_range(100, [0, 99]) == (1, 99)  # GPT-2 style: the special token at the end
    assert token_range(10, []) == (0, 10)
    with pytest.raises(InterpError):
        token_range(3, [0, 1, 2])


def test_repeated_tokens_range_sink_seed():
    tokens = repeated_tokens(16, 10, seed=3, low=5, high=9, sink_token=1)
    assert tokens.shape == (16, 21) and tokens.dtype == torch.long
    assert (tokens[:, 0] == 1).all()
    body = tokens[:, 1:]
    assert ((body >= 5) & (body < 9)).all()
    assert set(body.unique().tolist()) == {5, 6, 7, 8}
    assert torch.equal(body[:, :10], body[:, 10:])
    assert torch.equal(tokens, repeated_tokens(16, 10, seed=3, low=5, high=9, sink_token=1))
    assert not torch.equal(tokens, repeated_tokens(16, 10, seed=4, low=5, high=9, sink_token=1))
    assert repeated_tokens(2, 10, seed=3, low=5, high=9).shape == (2, 20)


def test_icl_losses_on_constructed_logprobs():
    seq_len = 4
    # [sink, a1..a4, a1..a4]: positions 2-4 are the scored first copy, 6-8 the second.
    logprobs = torch.tensor([[math.nan, -9.0, -1.0, -2.0, -3.0, -9.0, -0.5, -0.5, -0.2]])
    losses = icl_losses(logprobs, seq_len, has_sink=True)
    assert losses["first_copy_loss"] == pytest.approx(2.0)
    assert losses["second_copy_loss"] == pytest.approx(0.4)
    no_sink = icl_losses(logprobs[:, 1:], seq_len, has_sink=False)
    assert no_sink == pytest.approx(losses)


def test_token_logprobs_picks_the_actual_next_token():
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]]))
    tokens = torch.tensor([[0, 1, 1]])
    logprobs = token_logprobs(logits, tokens)
    assert math.isnan(logprobs[0, 0])
    assert logprobs[0, 1:].tolist() == pytest.approx([math.log(0.5), math.log(0.1)])


def test_copy_score_sign():
    torch.manual_seed(0)
    vocab, d_model, d_head = 20, 8, 8
    W_E = torch.randn(vocab, d_model)
    W_U = torch.linalg.pinv(W_E)  # W_E W_U is the projection onto W_E's row space
    eye = torch.eye(d_model, d_head)
    W_V = torch.stack([eye, eye])[None]  # [layers=1, heads=2, d_model, d_head]
    W_O = torch.stack([eye.T, -eye.T])[None]
    scores = copy_scores(W_E, W_V, W_O, W_U)
    assert scores.copying.tolist() == pytest.approx([1.0, -1.0])
    # GQA: two query heads share one kv head.
    assert list(copy_scores(W_E, W_V[:, :1], W_O, W_U).kv_head) == [0, 0]


def test_copy_score_folds_norm_weights():
    W_E, eye = torch.eye(2), torch.eye(2)[None, None]
    plain = copy_scores(W_E, eye, eye, torch.eye(2)).copying.item()
    assert plain == pytest.approx(1.0)
    # A negative channel weight turns copying into suppression on that channel.
    flipped = copy_scores(W_E, eye, eye, torch.eye(2), ln_final=torch.tensor([-1.0, -1.0]))
    assert flipped.copying.item() == pytest.approx(-1.0)
    half = copy_scores(W_E, eye, eye, torch.eye(2), ln1=torch.tensor([[1.0, -1.0]]))
    assert half.copying.item() == pytest.approx(0.0, abs=1e-9)


def test_copy_score_of_a_rotation_is_below_one():
    # A 90-degree rotation maps every token to an orthogonal one: eigenvalues +-i, sum 0.
    W_E = torch.eye(2)
    rotation = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    scores = copy_scores(W_E, rotation[None, None], torch.eye(2)[None, None], torch.eye(2))
    assert scores.copying.item() == pytest.approx(0.0, abs=1e-9)


def test_ablation_hooks_zero_and_mean():
    z = torch.randn(2, 5, 3, 4)
    means = torch.randn(2, 3, 4)
    hooks = dict(ablation_hooks([(1, 0), (1, 2), (0, 1)], "zero"))
    assert sorted(hooks) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    out = hooks["blocks.1.attn.hook_z"](z, None)
    assert (out[:, :, [0, 2]] == 0).all() and torch.equal(out[:, :, 1], z[:, :, 1])
    assert not (z == 0).any()  # the caller's tensor is left alone
    ((name, fn),) = ablation_hooks([(1, 2)], "mean", means=means)
    out = fn(z, None)
    assert name == "blocks.1.attn.hook_z"
    assert torch.equal(out[:, :, 2], means[1, 2].expand(2, 5, 4))
    assert torch.equal(out[:, :, :2], z[:, :, :2])
    with pytest.raises(InterpError):
        ablation_hooks([(0, 0)], "mean")
    with pytest.raises(InterpError):
        ablation_hooks([(0, 0)], "resample")


def test_ablation_frame_rows_and_deltas():
    # A fake model whose loss is 1 + 0.5 per ablated head in layer 1, + 2 more in mean mode.
    def measure(heads, mode):
        return (
            1.0
            + sum(0.5 for layer, _ in heads if layer == 1)
            + (2.0 if heads and mode == "mean" else 0.0)
        )

    all_heads = [(layer, head) for layer in range(2) for head in range(3)]
    frame = ablation_frame(measure, [(1, 0), (1, 1)], all_heads, seeds=[0, 1, 2])
    assert len(frame) == 1 + 2 * (1 + 3)
    baseline = frame[frame.condition == "baseline"].iloc[0]
    assert baseline.second_copy_loss == 1.0 and baseline["mode"] == "none"
    top = frame[frame.condition == "top"].set_index("mode")
    assert top.loc["zero", "delta"] == pytest.approx(1.0)
    assert top.loc["mean", "delta"] == pytest.approx(3.0)
    random_rows = frame[frame.condition == "random"]
    assert (random_rows.k == 2).all()
    drawn = {head for heads in random_rows.heads for head in heads.split()}
    assert not drawn & {"1.0", "1.1"}  # top heads are never drawn
    zero_rows = random_rows[random_rows["mode"] == "zero"]
    assert list(zero_rows.seed) == [0, 1, 2]
    # Draws are reproducible: the same seed picks the same heads in both modes.
    assert list(zero_rows.heads) == list(random_rows[random_rows["mode"] == "mean"].heads)


def test_set_effects_and_the_per_head_rule():
    ablation = pd.DataFrame(
        {
            "condition": ["baseline", "top", "random", "random", "top", "random", "random"],
            "mode": ["none", "zero", "zero", "zero", "mean", "mean", "mean"],
            "delta": [0.0, 3.0, 1.0, -0.2, 0.15, 0.01, 0.02],
        }
    )
    effects = set_effects(ablation, ratio=2.0, min_delta=0.1).set_index("mode")
    assert effects.loc["zero", "confirmed"]  # 3 > 2 x 1
    assert effects.loc["zero", "random_mean"] == pytest.approx(0.4)
    assert not effects.loc["mean", "confirmed"]  # 0.15 < 2 x max(0.02, 0.1)
    heads = pd.DataFrame(
        {"induction": [0.9, 0.9, 0.9, 0.3], "ablation_delta": [0.5, 0.15, float("nan"), 2.0]}
    )
    flags = is_induction_head(heads, null=[0.2, -0.1], threshold=0.4, min_delta=0.1)
    assert flags.tolist() == [True, False, False, False]


@pytest.fixture(scope="module")
def smollm_induction(smollm):
    """`interp induction`'s measurements on smollm2-135m, small enough for one CPU thread."""
    return interventions.induction_heads(smollm, seq_len=30, batch=3, seed=0, top=5, draws=2)


@pytest.mark.slow
def test_smollm_has_induction_heads_and_learns_in_context(smollm, smollm_induction):
    heads, losses = smollm_induction["heads"], smollm_induction["losses"]
    assert (smollm_induction["scores"].induction > 0.5).sum() >= 3
    assert losses["second_copy_loss"] < 0.4 * losses["first_copy_loss"]
    # GQA: 9 query heads read 3 kv heads, in groups of 3.
    assert (heads.kv_head == heads["head"] // 3).all()
    assert len(smollm_induction["scores"]) == 30 * 9
    # The probe never holds a special token: SmolLM2's specials are ids 0..16, BOS (1) leads.
    probe = smollm_induction["probe"]
    assert probe["low"] == 17 and probe["high"] == 49152 and probe["sink"] == 1


@pytest.mark.slow
def test_smollm_top_heads_matter_more_than_random_heads(smollm_induction):
    effects = smollm_induction["effects"].set_index("mode")
    ablation = smollm_induction["ablation"]
    assert set(ablation["mode"]) == {"none", "zero", "mean"} and (ablation.k[1:] == 5).all()
    for mode in ("zero", "mean"):
        assert effects.loc[mode, "top_delta"] > 1.0
        assert effects.loc[mode, "top_delta"] > 2 * effects.loc[mode, "random_max"]
        assert effects.loc[mode, "confirmed"]


@pytest.mark.slow
def test_smollm_induction_heads_have_both_kinds_of_evidence(smollm_induction):
    heads, null = smollm_induction["heads"], smollm_induction["null"]
    flagged = heads[heads.induction_head]
    assert len(flagged) >= 2
    assert (flagged.induction >= interventions.THRESHOLD).all()
    assert (flagged.ablation_delta >= max(interventions.MIN_DELTA, null.ablation_delta.max())).all()
    # Heads below the threshold are not ablated one by one: score evidence comes first.
    assert heads.ablation_delta[heads.induction < interventions.THRESHOLD].isna().all()
