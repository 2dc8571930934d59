"""Activation patching and attribution patching against exact computations.

attn-only-2l is an induction model: on [x0..x9, x0..x4] it predicts x5. The corrupted prompt
replaces the first x5 by another token y, so it predicts y; the metric is logit(x5) - logit(y).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.analysis import patching as pa
from interp.errors import InterpError
from interp.runs.grad import with_grad
from interp.runs.patching import capture, patched_metrics, patching

CHANGED = 5  # the one position where the induction prompts differ


@pytest.fixture(scope="module")
def induction():
    return interp.load("attn-only-2l")


@pytest.fixture(scope="module")
def moe():
    return interp.load("tiny-moe")


def induction_pair(model, seed: int):
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(1, model.cfg.d_vocab, (10,), generator=generator)
    clean = torch.cat([first, first[:5]])
    corrupt = clean.clone()
    corrupt[CHANGED] = (first[CHANGED] + 7) % model.cfg.d_vocab
    return clean, corrupt, int(clean[CHANGED]), int(corrupt[CHANGED])


def scores(result, grid: str, method: str) -> np.ndarray:
    frame = result.frames[grid]
    return frame.loc[frame["method"] == method, "score"].to_numpy()


def test_normalisation_ends_at_the_clean_and_corrupted_runs(induction):
    clean, corrupt, answer, wrong = induction_pair(induction, 0)
    metric = pa.answer_metric(answer, wrong)
    last = f"blocks.{induction.cfg.n_layers - 1}.hook_resid_post"
    names = ["blocks.0.hook_resid_pre", last]
    acts, logits = capture(induction, clean, names)
    _, corrupt_logits = capture(induction, corrupt, [])
    m_clean, m_corrupt = float(metric(logits)[0]), float(metric(corrupt_logits)[0])
    everything, nothing = slice(None), slice(0, 0)
    cells = [
        pa.Cell("x", "blocks.0.hook_resid_pre", (everything,), (0,)),  # the whole clean input
        pa.Cell("x", last, (len(clean) - 1,), (1,)),  # the final residual the answer is read from
        pa.Cell("x", "blocks.0.hook_resid_pre", (nothing,), (2,)),  # patches nothing
    ]
    raw = patched_metrics(induction, corrupt, acts, cells, metric, batch_size=3)
    assert pa.normalise(raw, m_clean, m_corrupt).tolist() == pytest.approx([1, 1, 0], abs=1e-5)
    # The grid: at layer 0 only the changed position differs, and patching it IS the clean input.
    result = patching(induction, clean, corrupt, answer, wrong, grids=["resid"])
    layer0 = scores(result, "resid", "activation")[: len(clean)]
    expected = np.eye(len(clean))[CHANGED]
    np.testing.assert_allclose(layer0, expected, atol=1e-5)
    assert (result.clean, result.corrupt) == pytest.approx((m_clean, m_corrupt), abs=1e-5)


def test_batched_grid_equals_one_patch_at_a_time(moe):
    clean, corrupt = "def foo(a, b):\n    return a +", "def foo(x, y):\n    return x +"
    result = patching(moe, clean, corrupt, answer=" ", wrong="'", grids=["heads", "mlp"])
    ids = {p: moe.tokenizer(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
           for p in (clean, corrupt)}  # fmt: skip
    with torch.no_grad():
        stored = {}
        names = ["blocks.2.attn.hook_z", "blocks.3.hook_mlp_out"]
        with moe.hooks(fwd_hooks=[(n, lambda t, hook, n=n: stored.__setitem__(n, t.clone()))
                                  for n in names]):  # fmt: skip
            logits = moe(ids[clean])
        a, w = (moe.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in " '")
        m_clean = float(logits[0, -1, a] - logits[0, -1, w])
        corrupt_logits = moe(ids[corrupt])
        m_corrupt = float(corrupt_logits[0, -1, a] - corrupt_logits[0, -1, w])

        def one(name, fn):  # a hand-written patch of a single run
            with moe.hooks(fwd_hooks=[(name, fn)]):
                out = moe(ids[corrupt])
            return (float(out[0, -1, a] - out[0, -1, w]) - m_corrupt) / (m_clean - m_corrupt)

        def head1(z, hook):
            z = z.clone()
            z[:, :, 1] = stored["blocks.2.attn.hook_z"][:, :, 1]
            return z

        mlp = stored["blocks.3.hook_mlp_out"]
        by_hand = [one("blocks.2.attn.hook_z", head1)]
        by_hand.append(one("blocks.3.hook_mlp_out", lambda t, hook: mlp))
    heads = scores(result, "heads", "activation").reshape(moe.cfg.n_layers, moe.cfg.n_heads)
    assert [heads[2, 1], scores(result, "mlp", "activation")[3]] == pytest.approx(by_hand, abs=1e-4)
    # The same grid one copy per forward.
    again = patching(moe, clean, corrupt, answer=" ", wrong="'", grids=["heads"], batch_size=1)
    np.testing.assert_allclose(scores(again, "heads", "activation"), heads.ravel(), atol=1e-4)


def test_attribution_patching_tracks_exact_patching(induction):
    for seed in range(3):
        result = patching(induction, *induction_pair(induction, seed))
        for grid in ("resid", "heads"):
            exact = scores(result, grid, "activation")
            estimate = scores(result, grid, "attribution")
            # measured 0.95-0.998 (Pearson) on these three pairs
            assert np.corrcoef(exact, estimate)[0, 1] > 0.9, (seed, grid)
        heads = scores(result, "heads", "activation").reshape(2, -1)
        assert heads[1].max() > heads[0].max()  # induction heads sit in layer 1


def test_gradient_times_activation_is_a_finite_difference(induction):
    """Both hook points at once: layer 0's z reaches the answer only through layer 1's residual,
    so its gradient is right only if keeping the later activation cut no path."""
    ids, _, answer, _ = induction_pair(induction, 0)
    metric = pa.answer_metric(answer, None)  # log p(answer)
    names = ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"]
    grads = with_grad(induction, ids, names, lambda logits: metric(logits).sum())
    generator = torch.Generator().manual_seed(0)
    for name in names:
        direction = torch.randn(grads.activations[name].shape, generator=generator)

        def shifted(eps: float, name=name, direction=direction) -> float:
            shift = [(name, lambda t, hook: t + eps * direction)]
            with torch.no_grad(), induction.hooks(fwd_hooks=shift):
                return float(metric(induction(ids[None]))[0])

        eps = 1e-3
        finite = (shifted(eps) - shifted(-eps)) / (2 * eps)
        linear = float((grads.grads[name] * direction).sum())
        assert linear == pytest.approx(finite, rel=1e-2, abs=1e-3), name
        assert abs(linear) > 1e-2  # a real slope, not two zeros agreeing
    assert grads.metric == pytest.approx(shifted(0.0), abs=1e-5)


def test_mistakes_are_one_line(induction, moe):
    with pytest.raises(InterpError, match="same length"):
        patching(moe, "def foo(a, b):", "def f(a):", answer=" ")
    with pytest.raises(InterpError, match="give one token"):
        patching(moe, "def foo(a, b):", "def foo(x, y):", answer=" return a")
    clean, _, answer, wrong = induction_pair(induction, 0)
    with pytest.raises(InterpError, match="same metric"):
        patching(induction, clean, clean, answer, wrong)
    with pytest.raises(InterpError, match="unknown grid"):
        patching(induction, clean, clean, answer, wrong, grids=["neurons"])


@pytest.mark.slow
def test_eiffel_subject_early_final_position_late(smollm):
    """The known pattern (Meng et al. 2022): the subject's tokens carry the answer through the
    early-middle layers, the final position in the late ones."""
    clean, corrupt = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"
    result = patching(smollm, clean, corrupt, " Paris", " Rome", grids=["resid"])
    assert len(result.tokens) == len(result.corrupt_tokens) == 9
    assert result.tokens[1:4] == [" E", "iffel", " Tower"]
    frame = result.frames["resid"]
    grid = frame[frame["method"] == "activation"].pivot(
        index="layer", columns="pos", values="score"
    )
    subject, final, n_layers = [1, 2, 3], 8, smollm.cfg.n_layers
    early, late = grid.loc[: n_layers // 2], grid.loc[n_layers - 4 :]
    assert early[subject].max(axis=1).min() > 0.7 and early[3].min() > 0.3  # " Tower" alone
    assert early[final].abs().max() < 0.1
    assert late[final].min() > 0.7 and late[subject].abs().max().max() < 0.1


def test_cli_prints_and_writes_the_grids(moe, tmp_path, capsys, monkeypatch):
    from interp.cli import main

    monkeypatch.setattr(interp, "load", lambda name, **options: moe)
    clean, corrupt = "def foo(a, b):\n    return a +", "def foo(x, y):\n    return x +"
    argv = ["patch", clean, corrupt, "--answer", " ", "--wrong", "'", "--model", "tiny-moe"]
    assert main([*argv, "--grid", "heads", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "heads, activation patching" in out and "mlp, attribution patching" in out
    assert "resid," not in out and "Pearson" in out
    path = tmp_path / "grids.csv"
    assert main([*argv, "-o", str(path)]) == 0
    written = pd.read_csv(path)
    api = interp.patching(moe, clean, corrupt, " ", "'")  # the package's export
    assert len(written) == sum(len(frame) for frame in api.frames.values())
    heads = written[(written["grid"] == "heads") & (written["method"] == "activation")]
    np.testing.assert_allclose(heads["score"], scores(api, "heads", "activation"), atol=1e-4)
    # Different token counts: one line, exit 2, nothing written.
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    assert main(["patch", clean, "def f(a):", "--answer", " ", "--model", "tiny-moe",
                 "-o", str(bad)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp: error: the clean prompt is 12 tokens")
    assert not bad.exists()
