"""Key attribution: the blocking estimate against hand computations and exact blocking."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analysis import coverage as cv
from interp.analysis import key_attribution as ka
from interp.runs.attribution import key_attribution

NEEDLE = "Note: the locker combination is 4826. Keep it safe. The locker combination is"


@pytest.fixture(scope="module")
def induction():
    return interp.load("attn-only-2l")


def induction_ids(model, seed: int) -> torch.Tensor:
    """[x0..x9, x0..x5]: the prompt is all but the last token, which induction predicts."""
    first = torch.randint(
        1, model.cfg.d_vocab, (10,), generator=torch.Generator().manual_seed(seed)
    )
    return torch.cat([first, first[:6]])


def test_edge_attribution_is_exact_for_a_metric_linear_in_the_weights():
    """m = sum g . a is linear, so the first-order estimate of a block is the block itself."""
    generator = torch.Generator().manual_seed(0)
    L, H, T, queries = 2, 3, 6, [3, 4]
    scores = torch.randn(L, H, T, T, generator=generator)
    patterns = scores.masked_fill(torch.ones(T, T).triu(1).bool(), -torch.inf).softmax(-1)
    grads = torch.randn(L, H, T, T, generator=generator)
    for key in range(4):
        blocked = patterns.clone()
        for q in queries:  # by hand: zero the column, renormalise the row
            row = blocked[:, :, q].clone()
            row[..., key] = 0
            blocked[:, :, q] = row / row.sum(-1, keepdim=True)
        exact = (grads * (blocked - patterns)).sum()
        estimate = ka.edge_attribution(patterns, grads, queries)[key]
        assert float(estimate) == pytest.approx(-float(exact), rel=1e-5, abs=1e-6)


def test_row_blocking_equals_one_block_per_run(induction):
    ids = induction_ids(induction, 0)[:-1]
    sets, queries, L = [[], [5], [2, 5, 7]], [len(ids) - 1], induction.cfg.n_layers
    with torch.no_grad():
        with induction.hooks(fwd_hooks=cv.row_blocking_hooks(sets, queries, L)):
            batched = induction(ids[None].expand(len(sets), -1))[:, -1]
        for row, keys in enumerate(sets):
            with induction.hooks(fwd_hooks=cv.blocking_hooks(keys, queries, L)):
                alone = induction(ids[None])[0, -1]
            torch.testing.assert_close(batched[row], alone, atol=1e-4, rtol=1e-4)


def test_attribution_ranks_keys_as_blocking_does(induction):
    for seed in range(3):
        ids = induction_ids(induction, seed)
        result = key_attribution(induction, ids, len(ids) - 1)
        keys = result["keys"].set_index("pos")
        # The induction head reads x5, the token after the earlier x4: it carries the answer.
        # First order underrates a block that removes a near-one-hot weight (0.4-2 nats
        # estimated for 4-5 measured), so x5 is in the top two, not always first.
        assert keys["exact"].idxmax() == 5 and keys.loc[5, "rank"] <= 2
        assert keys.loc[5, "covered"] and 5 in result["blocked"]
        assert result["spearman"] > 0.5, seed  # measured 0.60, 0.80, 0.76
        assert keys["exact"].notna().sum() == len(ids) - 2  # every key but the sink, exactly
        assert result["greedy_when_blocked"] != result["continuation"]


@pytest.mark.slow
def test_needle_digits_carry_the_answer(smollm):
    """The continuation is " 48" (" ", "4", "8"): the two digits it copies rank in the top three
    (attention mass ranks "4" fifth at best, issue 18), and blocking the covered keys flips it."""
    run = interp.trace(smollm, NEEDLE, max_new_tokens=3, capture=())
    record = run.records[0]
    result = key_attribution(smollm, record.ids, record.n_prompt)
    assert result["continuation"] == " 48"
    keys = result["keys"]
    four, eight = (int(keys.loc[keys["token"] == d, "pos"].iloc[0]) for d in "48")
    ranks = keys.set_index("pos")["rank"]
    assert ranks[four] == 1 and ranks[eight] <= 3
    assert {four, eight} <= set(result["blocked"])
    assert result["spearman"] > 0.8  # measured 0.93 over the 21 keys
    assert result["blocked_logprob"] < result["baseline"] - 5
    assert not result["greedy_when_blocked"].startswith(" 4")


def test_coverage_command_leads_with_attribution(monkeypatch, capsys):
    import json

    from interp.cli import main
    from interp.runs.coverage import continuation

    moe = interp.load("tiny-moe")
    monkeypatch.setattr(interp, "load", lambda name, **options: moe)
    prompt = "def area(w, h):\n    return w *"
    assert main(["coverage", prompt, "--generate", "2", "--model", "tiny-moe"]) == 0
    out = capsys.readouterr().out
    assert 0 < out.index("key attribution") < out.index("Spearman") < out.index("attention mass")
    assert main(["coverage", prompt, "--generate", "2", "--model", "tiny-moe",
                 "--format", "json"]) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)["attribution"]
    record = interp.trace(moe, prompt, max_new_tokens=2, capture=()).records[0]
    api = key_attribution(moe, continuation(record), record.n_prompt)["keys"]
    assert [row["attribution"] for row in shown] == pytest.approx(api["attribution"].tolist())
