"""Prompt-key coverage: definitions on hand-built attention, blocking hooks, and SmolLM2 checks."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from interp.analysis import coverage as cv
from interp.cli import coverage as cli
from interp.errors import InterpError
from interp.runs.coverage import measure

PASSWORD = "The password is 7391. Remember the password. The password is "
SEVEN = 4  # position of "7": The, password, is, " ", 7, 3, 9, 1, ...


def parse(*argv: str) -> argparse.Namespace:
    """The `interp coverage` arguments, checked as the command checks them (a mistake raises)."""
    from interp.cli import build_parser

    return build_parser(["coverage"]).parse_args(["coverage", *argv])


# Hand-built trace: 2 layers x 2 query heads sharing 1 kv head; prompt of 5 tokens (a BOS at
# position 2), 2 generated. G = {4, 5} (row 6 predicts nothing generated and must be ignored).
N_PROMPT, T, BOS = 5, 7, 99
TOKEN_IDS = [10, 11, BOS, 12, 13, 14, 15]


def hand_rows() -> dict[tuple[int, int, int], list[float]]:
    """(layer, head, query) -> causal weights over keys 0..query (each row sums to 1)."""
    rng = np.random.default_rng(0)
    rows = {}
    for layer in range(2):
        for head in range(2):
            for q in (4, 5, 6):
                w = rng.random(q + 1) ** 3
                rows[layer, head, q] = list(w / w.sum())
    rows[1, 0, 4] = [0.0, 0.0, 0.0, 0.0, 1.0]  # one hard lookup: key 4 at 5x uniform
    return rows


def hand_frames():
    rows = hand_rows()
    attention = pd.DataFrame(
        [
            {"prompt": 0, "layer": i, "head": h, "kv_head": 0, "query": q, "key": k, "weight": w}
            for (i, h, q), ws in rows.items()
            for k, w in enumerate(ws)
        ]
    )
    tokens = pd.DataFrame({
        "prompt": 0, "pos": range(T), "token_id": TOKEN_IDS,
        "token": [f"t{i}" for i in range(T)], "generated": [p >= N_PROMPT for p in range(T)],
        "logprob": 0.0, "entropy": 0.0,
    })  # fmt: skip
    return attention, tokens


def expected(rows, queries, heads, tau, norms=None):
    """The definitions, written out with plain loops over the chosen (layer, head) pairs."""
    keys = [1, 3, 4]  # sinks: 0 and the BOS at 2
    share, peak = [0.0] * T, {k: 0.0 for k in keys}
    for layer, head in heads:
        for q in queries:
            w = list(rows[layer, head, q])
            if norms is not None:
                w = [x * norms[layer][head][k] for k, x in enumerate(w)]
                w = [x / sum(w) for x in w]
            for k, x in enumerate(w):
                share[k] += x / (len(heads) * len(queries))
                if k in peak:
                    peak[k] = max(peak[k], x * (q + 1))
    total = sum(share[k] for k in keys)
    mass = {k: share[k] / total for k in keys}
    entropy = -sum(m * math.log(m) for m in mass.values())
    cumulative, n90 = 0.0, 0
    for m in sorted(mass.values(), reverse=True):
        cumulative, n90 = cumulative + m, n90 + 1
        if cumulative >= 0.9:
            break
    return {
        "sink_mass": share[0] + share[2],
        "prompt_mass": total,
        "coverage": sum(peak[k] >= tau for k in keys) / 3,
        "effective_coverage": math.exp(entropy) / 3,
        "keys_90": n90 / 3,
        "top_key": max(mass, key=mass.get),
        "mass": mass,
        "peak": peak,
    }


ALL_HEADS = [(layer, head) for layer in range(2) for head in range(2)]
STATS = ["sink_mass", "prompt_mass", "coverage", "effective_coverage", "keys_90"]


@pytest.mark.parametrize("weighted", [False, True])
def test_coverage_equals_the_definitions(weighted):
    attention, tokens = hand_frames()
    rows, tau = hand_rows(), 2.0
    norms = torch.rand(2, 2, T, generator=torch.Generator().manual_seed(1)) + 0.1
    cov = cv.coverage(attention, tokens, tau=tau, bos_id=BOS,
                      value_norms=[norms] if weighted else None)  # fmt: skip
    plain = norms.tolist() if weighted else None
    want = expected(rows, [4, 5], ALL_HEADS, tau, plain)
    got = cov.summary.iloc[0]
    assert got["queries"] == 2 and got["keys"] == 3 and got["value_weighted"] == weighted
    for name in STATS:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name
    assert got["top_key"] == want["top_key"]
    keys = cov.keys.set_index("pos")
    assert list(keys["sink"]) == [True, False, True, False, False]
    for k in (1, 3, 4):
        assert keys.loc[k, "mass"] == pytest.approx(want["mass"][k], abs=1e-6)
        assert keys.loc[k, "peak"] == pytest.approx(want["peak"][k], abs=1e-5)
        assert keys.loc[k, "covered"] == (want["peak"][k] >= tau)
    assert keys["mass"].sum() == pytest.approx(1.0) and keys["mass"].isna().sum() == 2
    assert not keys["covered"][keys["sink"]].any()
    # Breakdowns: layer 1 alone, and head (0, 1) alone, follow the same definitions.
    layer = cov.layers.set_index("layer").loc[1]
    head = cov.heads.set_index(["layer", "head"]).loc[(0, 1)]
    for got_row, heads in [(layer, [(1, 0), (1, 1)]), (head, [(0, 1)])]:
        want = expected(rows, [4, 5], heads, tau, plain)
        for name in STATS:
            assert got_row[name] == pytest.approx(want[name], abs=1e-6), name
    assert list(cov.heads["kv_head"]) == [0] * 4 and len(cov.layers) == 2


def test_query_choices_and_hard_lookup():
    attention, tokens = hand_frames()
    rows = hand_rows()
    every = cv.coverage(attention, tokens, tau=5.0, queries="all", bos_id=BOS)
    want = expected(rows, [4, 5, 6], ALL_HEADS, 5.0)
    assert every.summary.iloc[0]["queries"] == 3
    assert every.summary.iloc[0]["coverage"] == pytest.approx(want["coverage"])
    # Layer 1 head 0 puts all of query 4's weight on key 4: exactly 5x uniform.
    assert every.keys.set_index("pos").loc[4, "covered"]
    # Without a BOS id, only position 0 is a sink.
    assert cv.coverage(attention, tokens).summary.iloc[0]["keys"] == 4
    assert cv.predicting_positions(5, 5) == [4] and cv.predicting_positions(5, 7) == [4, 5]
    with pytest.raises(InterpError, match="query_positions='all'"):
        cv.coverage(attention[attention["query"] != 5], tokens)
    with pytest.raises(InterpError, match="two tokens"):
        cv.coverage(attention, tokens.assign(generated=tokens["pos"] >= 1), queries="all")


def test_token_masses_and_shading():
    attention, tokens = hand_frames()
    cov = cv.coverage(attention, tokens, bos_id=BOS)
    rows = cv.token_masses(cov)
    assert [t for t, _ in rows] == ["t0", "t1", "t2", "t3", "t4"]
    assert rows[0][1] is None and rows[2][1] is None
    assert sum(m for _, m in rows if m is not None) == pytest.approx(1.0)
    plain = cli.shade(rows, tty=False).splitlines()
    assert len(plain) == 5 and plain[0].endswith("sink") and "#" * cli.BAR in "".join(plain)
    shaded = cli.shade(rows, tty=True)
    assert shaded.count("\x1b[48;5;") == 3 and "t3" in shaded


def test_value_norms_use_the_shared_kv_head():
    values = torch.randn(2, 4, 1, 3)  # [L, T, kv_heads, d_head]
    W_O = torch.randn(2, 2, 3, 5).requires_grad_()  # two query heads read the one kv head
    with torch.enable_grad():  # as outside the tests: the model's parameters carry grad
        norms = cv.value_norms(values, W_O)
    assert norms.shape == (2, 2, 4) and not norms.requires_grad
    want = (values[1, 2, 0] @ W_O[1, 1].detach()).norm()
    assert norms[1, 1, 2] == pytest.approx(float(want), rel=1e-5)


def test_blocking_hooks_zero_and_renormalise_the_query_rows():
    pattern = torch.tril(torch.rand(1, 2, 5, 5)) + torch.eye(5)
    pattern = pattern / pattern.sum(-1, keepdim=True)
    hooks = cv.blocking_hooks([1, 2], queries=[3, 4], n_layers=3)
    assert [name for name, _ in hooks] == [f"blocks.{i}.attn.hook_pattern" for i in range(3)]
    out = hooks[0][1](pattern, None)
    assert torch.equal(out[..., :3, :], pattern[..., :3, :])  # other queries untouched
    assert (out[..., 3:, 1:3] == 0).all()
    torch.testing.assert_close(out[..., 3:, :].sum(-1), torch.ones(1, 2, 2))
    kept = pattern[..., 3:, [0, 3, 4]]
    torch.testing.assert_close(out[..., 3:, [0, 3, 4]], kept / kept.sum(-1, keepdim=True))
    # A KV-cache step: one query row, the last position (4) over 5 keys.
    step = hooks[0][1](pattern[..., 4:, :], None)
    torch.testing.assert_close(step, out[..., 4:, :])
    early = pattern[..., :3, :3]  # queries 0..2 only: nothing to block
    assert hooks[0][1](early, None) is early


def test_causal_check_and_verdict():
    def tokens(cont):
        return pd.DataFrame({"pos": range(5), "logprob": [np.nan, -1, -1, *cont]})

    base = tokens([-1.0, -0.5])
    blocked = {"uncovered": tokens([-1.1, -0.5]), "top": tokens([-3.0, -2.5])}
    sets = {"uncovered": [1], "top": [2]}
    out = cv.causal_check(base, blocked, sets, n_prompt=3).set_index("blocked")
    assert out.loc["uncovered", "delta"] == pytest.approx(-0.1)
    assert out.loc["top", "delta_per_token"] == pytest.approx(-2.0)
    assert out.loc["top", "baseline"] == pytest.approx(-1.5)
    assert out["trustworthy"].all()
    blocked["uncovered"] = tokens([-2.0, -0.5])  # uncovered keys mattered after all
    assert not cv.causal_check(base, blocked, sets, 3)["trustworthy"].any()
    empty = {"uncovered": [], "top": []}  # nothing uncovered: untested, not trustworthy
    assert not cv.causal_check(base, {k: base for k in empty}, empty, 3)["trustworthy"].any()


@pytest.fixture(scope="module")
def password(smollm):
    return measure(smollm, PASSWORD, generate=1, value_weighted=True)


@pytest.mark.slow
def test_password_digit_gets_high_mass_and_blocking_it_changes_the_answer(smollm, password):
    import interp

    assert password["continuation"] == "7"
    keys = password["coverage"].keys.set_index("pos")
    assert keys.loc[SEVEN, "token"] == "7" and keys.loc[SEVEN, "covered"]
    # Value-weighted, "7" gets about twice the uniform share and ranks among the top 3 keys.
    assert keys.loc[SEVEN, "mass"] > 1.5 / len(keys.dropna())
    assert SEVEN in keys["mass"].nlargest(3).index
    prompt_ids = interp.trace(smollm, PASSWORD, capture=()).records[0].ids
    n0, L = len(prompt_ids), smollm.cfg.n_layers
    low = int(keys[~keys["sink"] & ~keys["covered"]]["mass"].idxmin())  # least-read uncovered

    def next_token(blocked):
        hooks = cv.blocking_hooks(blocked, [n0 - 1], L)
        out = interp.trace(smollm, prompt_ids, capture=(), fwd_hooks=hooks).records[0]
        logp = out.query_logits[-1].log_softmax(-1)
        return smollm.tokenizer.decode([int(logp.argmax())]), float(logp.max())

    base_token, base_logp = next_token([])
    seven_token, _ = next_token([SEVEN])
    low_token, low_logp = next_token([low])
    assert base_token == "7" and seven_token != "7"
    assert low_token == "7" and abs(low_logp - base_logp) < 0.1
    causal = password["causal"].set_index("blocked")
    assert abs(causal.loc["uncovered", "delta_per_token"]) <= cv.UNCOVERED_MAX
    assert causal.loc["top", "delta_per_token"] <= -cv.TOP_MIN
    assert causal["trustworthy"].all() and password["blocked_text"]["uncovered"] == "7"


@pytest.mark.slow
def test_blocking_changes_attn_out_only_at_the_query_rows(smollm):
    import interp

    ids = interp.trace(smollm, PASSWORD, capture=()).records[0].ids
    hooks = cv.blocking_hooks([SEVEN], [len(ids) - 1], smollm.cfg.n_layers)
    # The same kernel for both: a hook_pattern hook runs TL's eager attention.
    unchanged = [(name, lambda p, hook: p) for name, _ in cv.blocking_hooks([], [], len(hooks))]
    base = interp.trace(smollm, ids, capture=("residual",), fwd_hooks=unchanged).tensor("attn_out")
    cut = interp.trace(smollm, ids, capture=("residual",), fwd_hooks=hooks).tensor("attn_out")
    torch.testing.assert_close(cut[:, :-1], base[:, :-1])
    assert (cut[:, -1] - base[:, -1]).norm(dim=-1).min() > 1e-3


@pytest.mark.slow
def test_streaming_equals_full_patterns_on_a_medium_prompt(smollm):
    import interp

    text = " ".join(["The river runs past the old mill, where the miller grinds wheat."] * 8)
    stream = interp.trace(smollm, text, max_new_tokens=3, capture=("attention",),
                          attention_budget_mb=0)  # fmt: skip
    assert not stream.meta["full_attention"] and stream.attention.empty
    ids = stream.records[0].ids
    full = interp.trace(smollm, ids, capture=("attention",), query_positions="all")
    a = cv.coverage(stream.query_attention, stream.tokens)
    b = cv.coverage(full.attention, stream.tokens)  # same G rows, cut from full T x T patterns
    assert a.summary.iloc[0]["keys"] > 100
    pd.testing.assert_frame_equal(a.summary, b.summary, atol=1e-4)
    pd.testing.assert_frame_equal(a.keys, b.keys, atol=1e-4)
    pd.testing.assert_frame_equal(a.heads, b.heads, atol=1e-4)


@pytest.mark.slow
def test_cli_prints_numbers_and_tokens(smollm, monkeypatch, capsys):
    import interp

    monkeypatch.setattr(interp, "load", lambda name, **options: smollm)
    assert cli.run(parse(PASSWORD)) == 0
    out = capsys.readouterr().out
    assert "effective_coverage" in out and "causal check" in out and "sink" in out
    assert out.index("key attribution") < out.index("attention mass")  # the headline first
    assert cli.run(parse(PASSWORD, "--format", "json", "--value-weighted", "--tau", "2")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"][0]["value_weighted"] and data["summary"][0]["tau"] == 2
    assert len(data["heads"]) == smollm.cfg.n_layers * smollm.cfg.n_heads


def test_cli_rejects_bad_arguments():
    with pytest.raises(InterpError, match="empty"):
        cli.run(parse("  "))
    with pytest.raises(InterpError, match="tau"):
        cli.run(parse("hi there", "--tau", "0"))
