"""Features over a corpus: counts and top contexts against a pass by hand, and the top-N
merge (any split, resume, torchrun) against one pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HANG_S
from feature_files import np_encode, weights, write_saelens

import interp
from interp.cli import main
from interp.survey import data as data_mod
from interp.survey.features import CONTEXT, TOP_N, merge_top
from interp.survey.output import Survey

HOOK = "blocks.2.hook_resid_post"
TORCHRUN = Path("/work/main/.venv/bin/torchrun")
ARGS = dict(stats=["heads"], tokens=1200, seq_len=64, batch_size=4)


@pytest.fixture(scope="module")
def tiny_moe():
    return interp.load("tiny-moe")


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    w = weights(d_in=128, d_sae=96, seed=5)
    return write_saelens(tmp_path_factory.mktemp("sae") / "res2", "topk", w, k=6, hook_name=HOOK), w


@pytest.fixture(scope="module")
def surveyed(tiny_moe, sae):
    return interp.survey(tiny_moe, features=[sae[0]], **ARGS)


def test_counts_and_top_contexts_match_a_pass_by_hand(tiny_moe, sae, surveyed):
    path, w = sae
    corpus = data_mod.Corpus([])
    bos = data_mod.bos_token(tiny_moe)
    windows = list(data_mod.windows(corpus, tiny_moe.tokenizer, 64, bos, ARGS["tokens"]))
    rows, ids_of = [], {}
    for start in range(0, len(windows), 4):  # the survey's batches, traced the same way
        chunk = windows[start : start + 4]
        trace = interp.trace(tiny_moe, [win.ids for win in chunk], capture=[HOOK])
        for p, win in enumerate(chunk):
            acts = np_encode(trace.tensor(HOOK, p).numpy(), w, "topk", k=6)
            for pos in range(len(win.ids)):
                rows.append((win.index * 64 + pos, acts[pos]))
            ids_of[win.index] = win.ids
    acts = np.stack([a for _, a in rows])
    gid = np.array([g for g, _ in rows])
    table = surveyed.features
    np.testing.assert_array_equal(table["count"], (acts > 0).sum(0))
    summary = surveyed.feature_summary.iloc[0]
    assert summary.tokens == len(acts)
    assert summary.dead_fraction == pytest.approx(((acts > 0).sum(0) == 0).mean())
    assert summary.dense_fraction == pytest.approx(((acts > 0).mean(0) > 0.1).mean())
    contexts = surveyed.feature_contexts
    for feature in range(acts.shape[1]):
        fired = np.nonzero(acts[:, feature] > 0)[0]
        order = sorted(fired, key=lambda r: (-acts[r, feature], gid[r]))[:TOP_N]
        got = contexts[contexts.feature == feature].sort_values("rank")
        np.testing.assert_allclose(got.activation, acts[order, feature], rtol=1e-4)
        assert list(got.window * 64 + got.pos) == list(gid[order])
    top = contexts[(contexts["rank"] == 0)].iloc[0]  # its context: the window's own tokens
    window_ids = ids_of[int(top.window)]
    lo = max(0, int(top.pos) - 8)
    texts = [tiny_moe.tokenizer.decode([int(i)]) for i in window_ids[lo : int(top.pos) + 4]]
    assert list(top.context) == texts and top.context[top.focus] == texts[int(top.pos) - lo]


def test_top_merge_is_the_same_for_any_split():
    g = torch.Generator().manual_seed(0)
    F, rows = 5, 40
    value = torch.rand(F, rows, generator=g).double().round(decimals=1)  # with ties
    ids = torch.randperm(rows, generator=g).expand(F, rows).contiguous()
    tokens = torch.randint(0, 50, (F, rows, CONTEXT), generator=g)
    acts = torch.rand(F, rows, CONTEXT, generator=g)
    state = {"t_value": value, "t_id": ids, "t_tokens": tokens, "t_acts": acts}

    def part(cols):
        return {k: v[:, cols] for k, v in state.items()}

    whole = merge_top([state], "t_", TOP_N)
    halves = merge_top([merge_top([part(slice(25, 40))], "t_", TOP_N),
                        merge_top([part(slice(0, 25))], "t_", TOP_N)], "t_", TOP_N)  # fmt: skip
    for key in whole:
        assert torch.equal(whole[key], halves[key]), key
    expect = sorted(range(rows), key=lambda c: (-float(value[0, c]), int(ids[0, c])))[:TOP_N]
    assert whole["t_id"][0].tolist() == [int(ids[0, c]) for c in expect]


def test_resume_after_an_interruption_keeps_the_same_tables(tiny_moe, sae, surveyed, tmp_path,
                                                            monkeypatch):  # fmt: skip
    from interp.survey import features as sf

    out, calls, real = tmp_path / "survey", [], sf.FeatureStats._add

    def interrupted(self, i, acts):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(self, i, acts)

    monkeypatch.setattr(sf.FeatureStats, "_add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        interp.survey(tiny_moe, features=[sae[0]], out=out, checkpoint_every=1, **ARGS)
    monkeypatch.setattr(sf.FeatureStats, "_add", real)
    assert list((tmp_path / ".survey.checkpoint").glob("*.pt"))
    resumed = interp.survey(tiny_moe, features=[sae[0]], out=out, checkpoint_every=1, **ARGS)
    for name in ("features", "feature_contexts", "feature_density", "feature_summary"):
        pd.testing.assert_frame_equal(resumed.tables[name], surveyed.tables[name])


@pytest.mark.slow  # torchrun subprocesses
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_torchrun_two_ranks_equals_one_process(sae, tmp_path):
    def command(out, *launcher):
        return [*launcher, "-m", "interp.cli", "survey", "--model", "tiny-moe", "--stats", "heads",
                "--tokens", "1200", "--seq-len", "64", "--batch-size", "4", "--no-progress",
                "--features", str(sae[0]), "--out", str(out)]  # fmt: skip

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_process = [sys.executable]
    two_ranks = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2"]
    for out, launcher in ((tmp_path / "one", one_process), (tmp_path / "two", two_ranks)):
        done = subprocess.run(command(out, *launcher), capture_output=True, text=True,
                              timeout=HANG_S, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = Survey.load(tmp_path / "one"), Survey.load(tmp_path / "two")
    assert two.meta["world_size"] == 2
    for name in ("features", "feature_contexts", "feature_summary"):
        pd.testing.assert_frame_equal(one.tables[name], two.tables[name], rtol=1e-6)


def test_cli_refuses_a_mismatched_dictionary(tmp_path, capsys):
    wide = write_saelens(tmp_path / "wide", "standard", weights(d_in=40), hook_name=HOOK)
    out = tmp_path / "out"
    assert main(["survey", "--model", "tiny-moe", "--features", str(wide), "--out", str(out),
                 "--tokens", "100", "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "width 40 at blocks.2.hook_resid_post" in err[0]
    assert not out.exists()
