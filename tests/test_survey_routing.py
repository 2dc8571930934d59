"""`interp survey --routing`: recorded routing surveyed with no model, against the survey of
the model itself on the same windows (tiny-deepseek, the held-out corpus); the engines'
formats read back alike; bad input refused in one line; torchrun splitting the shards."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import HANG_S

import interp
from interp.analysis import experts as ex
from interp.cli import main
from interp.survey import from_routing, recorded, trace_routing, write_routing
from interp.survey.output import Survey
from interp.survey.routing_model import routing_model
from interp.trace.facts import ModelFacts

TORCHRUN = Path(sys.executable).parent / "torchrun"
MODEL, TOKENS, SEQ, BATCH = "tiny-deepseek", 3000, 64, 4
SHAPE = ["--seq-len", str(SEQ), "--batch-size", str(BATCH), "--tokens", str(TOKENS)]


@pytest.fixture(scope="module")
def surveys(tmp_path_factory):
    """The model survey, the routing it exported (npz), and the survey of that routing."""
    tmp = tmp_path_factory.mktemp("routing")
    common = ["survey", "--model", MODEL, *SHAPE, "--seed", "2", "--no-progress"]
    assert main([*common, "--stats", "experts", "--out", str(tmp / "model")]) == 0
    assert main([*common, "--export-routing", str(tmp / "r.npz")]) == 0
    recorded_args = ["--model", MODEL, "--batch-size", str(BATCH), "--seed", "2"]
    assert main(["survey", "--routing", str(tmp / "r.npz"), *recorded_args, "--out",
                 str(tmp / "rec"), "--no-progress"]) == 0  # fmt: skip
    requests = list(recorded.read(tmp / "r.npz", routing_model(MODEL)))
    return Survey.load(tmp / "model"), Survey.load(tmp / "rec"), requests, tmp


def _same_tables(rec: Survey, model: Survey) -> None:
    """Every table of the recorded survey equals the model survey's, exactly; the model
    survey lists domains the token cap never reached (all zero), the routing only those
    it holds."""
    assert set(rec.tables) == set(model.tables) - {"routing_entropy"}
    for name, frame in rec.tables.items():
        want = model.tables[name]
        if name == "domain_load":
            unread = ~want["domain"].isin(rec.meta["domains"])
            assert (want.loc[unread, "count"] == 0).all()
            want = want[~unread].reset_index(drop=True)
        assert set(want.columns) - set(frame.columns) <= {"prob", "balance", "routing_entropy"}
        pd.testing.assert_frame_equal(frame, want[frame.columns], check_exact=True)


def test_recorded_survey_equals_model_survey(surveys):
    model, rec, requests, _ = surveys
    _same_tables(rec, model)
    assert rec.coactivation["count"].sum() > 0 and not rec.expert_tokens.empty
    for key in ["tokens", "windows", "batches"]:
        assert rec.meta[key] == model.meta[key], key
    assert rec.meta["tokens"] == TOKENS == sum(len(r.ids) for r in requests)
    assert "router probabilities" in rec.meta["absent"]


def test_report_says_what_is_absent(surveys):
    _, _, _, tmp = surveys
    assert main(["report", "--survey", str(tmp / "rec"), "-o", str(tmp / "rec.html")]) == 0
    html = (tmp / "rec.html").read_text()
    assert "Counted from recorded routing; absent: router probabilities" in html


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_every_format_reads_back_the_same(surveys, suffix):
    model, _, requests, tmp = surveys
    path = write_routing(requests, tmp / f"again{suffix}")
    rec = from_routing(path, MODEL, batch_size=BATCH, seed=2)
    _same_tables(rec, model)


def test_engine_responses_read_as_their_docs_say(surveys, tmp_path):
    """vLLM's completions response (prompt routing on the response, generated tokens' on
    each choice) and SGLang's /generate (base64 int32 over every layer, dense layer 0
    included, for seqlen - 1 tokens) give the requests they were built from."""
    model, _, requests, _ = surveys
    spec = routing_model(MODEL)
    vllm, sglang = [], []
    for r in requests:
        cut = len(r.ids) // 2
        vllm.append({"prompt_token_ids": r.ids[:cut].tolist(),
                     "prompt_routed_experts": r.experts[:cut].tolist(), "domain": r.domain,
                     "choices": [{"token_ids": r.ids[cut:].tolist(),
                                  "routed_experts": r.experts[cut:].tolist()}]})  # fmt: skip
        every = np.full((len(r.ids), spec.n_layers, spec.top_k), 7, dtype="<i4")  # dense: junk
        every[:, spec.moe_layers] = r.experts
        blob = base64.b64encode(every[:-1].tobytes()).decode()
        sglang.append({"input_ids": r.ids[:cut].tolist(), "output_ids": r.ids[cut:].tolist(),
                       "meta_info": {"routed_experts": blob}, "domain": r.domain})  # fmt: skip
    for name, rows in [("vllm.jsonl", vllm), ("sglang.jsonl", sglang)]:
        (tmp_path / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        got = list(recorded.read(tmp_path / name, spec))
        drop = 1 if name.startswith("sglang") else 0  # its last token has no routing
        for a, b in zip(got, requests, strict=True):
            assert np.array_equal(a.ids, b.ids[: len(b.ids) - drop]) and a.domain == b.domain
            assert np.array_equal(a.experts, b.experts[: len(b.ids) - drop])


def test_a_traces_routing_counts_as_its_frames_say(tmp_path):
    """A trace's routing, exported and surveyed, against the trace's own expert load and
    co-activation (interp.analysis.experts on its routing frame)."""
    model = interp.load(MODEL)
    prompts = ["The cat sat on the mat and then", "def f(x):\n    return x + 1\n", "3 + 4 = 7"]
    trace = interp.trace(model, prompts, capture=["routing"])
    path = write_routing(trace_routing(trace, ["prose", "code", "numbers"]), tmp_path / "t.npz")
    got = from_routing(path, MODEL)
    load = ex.expert_load(trace.routing)
    mine = got.experts.merge(load, on=["layer", "expert"], how="left", suffixes=("", "_t"))
    assert (mine["count"] == mine["count_t"].fillna(0)).all() and mine["count"].sum() > 0
    co = ex.coactivation(trace.routing)
    mine = got.coactivation.merge(co, on=["layer", "expert", "partner"], suffixes=("", "_t"))
    np.testing.assert_allclose(mine["rate"], mine["rate_t"], atol=1e-12)
    assert got.meta["domains"] == ["prose", "code", "numbers"]


def test_unrecorded_tokens_are_left_out(surveys, tmp_path):
    """vLLM marks prefix-cache hits it holds no routing for with -1: those tokens count
    nowhere, as padding would."""
    _, rec, requests, _ = surveys
    marked = [recorded.Recorded(r.ids, r.experts.copy(), r.domain) for r in requests]
    marked[0].experts[5] = -1
    got = from_routing(write_routing(marked, tmp_path / "m.npz"), MODEL,
                                     batch_size=BATCH, seed=2)  # fmt: skip
    assert got.meta["tokens"] == rec.meta["tokens"] - 1
    counts = got.experts.groupby("layer")["count"].sum()
    assert (counts == (TOKENS - 1) * routing_model(MODEL).top_k).all()


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-deepseek", "tiny-hybrid", "tiny-deepseek-v4"])
def test_config_gives_the_routers_the_model_has(name):
    facts, spec = ModelFacts.of(interp.load(name)), routing_model(name)
    assert (spec.moe_layers, spec.n_experts, spec.top_k) == (
        facts.moe_layers, facts.n_experts, facts.top_k)  # fmt: skip
    assert (spec.n_layers, spec.d_vocab) == (facts.n_layers, facts.d_vocab)


def _bad(requests, tmp: Path, case: str) -> tuple[list[str], str]:
    spec = routing_model(MODEL)
    few = [recorded.Recorded(r.ids.copy(), r.experts.copy(), r.domain) for r in requests[:4]]
    path = tmp / "bad.npz"
    model = [MODEL]
    if case == "expert out of range":
        few[1].experts[3, 0, 2] = spec.n_experts
        message = f"expert id {spec.n_experts} lies outside [0, {spec.n_experts})"
    elif case == "wrong top-k":
        few = [recorded.Recorded(r.ids, r.experts[:, :, :6], r.domain) for r in few]
        message = f"top-6; {MODEL} routes each token to {spec.top_k} experts"
    elif case == "layer count":
        few = [recorded.Recorded(r.ids, r.experts[:, :1], r.domain) for r in few]
        message = "the routing has 1 layers; tiny-deepseek has 2 MoE layers (of 3)"
    elif case == "token out of vocabulary":
        few[0].ids[2] = spec.d_vocab
        message = f"token id {spec.d_vocab} lies outside the vocabulary"
    elif case == "expert twice":
        few[2].experts[0, 1, 1] = few[2].experts[0, 1, 0]
        message = "twice in one layer"
    elif case == "unknown model":
        model = ["no-such-model"]
        message = "unknown model 'no-such-model'"
    write_routing(few, path)
    if case == "truncated npz":
        path.write_bytes(path.read_bytes()[:-200])
        message = "is corrupt or truncated"
    elif case == "truncated jsonl":
        path = write_routing(few, tmp / "bad.jsonl")
        path.write_bytes(path.read_bytes()[:-100])
        message = "bad.jsonl:4 is not valid JSON"
    elif case == "corrupt parquet":
        path = tmp / "bad.parquet"
        path.write_bytes(b"PAR1 not really parquet")
        message = "as parquet"
    return ["--routing", str(path), "--model", *model], message


BAD = ["expert out of range", "wrong top-k", "layer count", "token out of vocabulary",
       "expert twice", "unknown model", "truncated npz", "truncated jsonl",
       "corrupt parquet"]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_routing_is_one_line_and_writes_nothing(surveys, tmp_path, capsys, case):
    args, message = _bad(surveys[2], tmp_path, case)
    capsys.readouterr()
    before = set(tmp_path.iterdir())
    out = tmp_path / "out"
    assert main(["survey", *args, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp: error:") and message in err[0], err
    assert set(tmp_path.iterdir()) == before  # no output dir, no temporary left


@pytest.mark.slow  # torchrun subprocesses
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
def test_torchrun_splits_shards_by_file(surveys, tmp_path):
    """Three shards (whole batches each) over two ranks equal one process over the three."""
    model, _, requests, _ = surveys
    shards = tmp_path / "shards"
    step = 4 * BATCH
    for n, start in enumerate(range(0, len(requests), step)):
        write_routing(requests[start : start + step], shards / f"part-{n}.npz")
    assert len(list(shards.iterdir())) == 3
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "interp.cli",
               "survey", "--routing", str(shards), "--model", MODEL, "--batch-size", str(BATCH),
               "--seed", "2", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = Survey.load(tmp_path / "out")
    assert merged.meta["world_size"] == 2 and merged.meta["tokens"] == TOKENS
    _same_tables(merged, model)
