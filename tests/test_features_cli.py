"""`interp features` as a user runs it, on the zoo's tiny-moe (d_model 128)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from feature_files import np_encode, weights, write_saelens

import interp
from interp.cli import main

HOOK = "blocks.2.hook_resid_post"
PROMPT = "The cat sat on the mat"


@pytest.fixture(scope="module")
def topk_sae(tmp_path_factory):
    w = weights(d_in=128, d_sae=256)
    path = write_saelens(tmp_path_factory.mktemp("sae") / "res2", "topk", w, k=8, hook_name=HOOK)
    return path, w


def test_json_rows_are_the_hand_encoded_top_features(topk_sae, capsys):
    path, w = topk_sae
    assert main(["features", PROMPT, "--model", "tiny-moe", "--features", str(path),
                 "--top", "4", "--position", "-2", "--format", "json"]) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    model = interp.load("tiny-moe")
    x = interp.trace(model, PROMPT, capture=[HOOK]).tensor(HOOK).numpy()
    acts = np_encode(x[-2:-1], w, "topk", k=8)[0]
    assert [r["feature"] for r in rows] == list(np.argsort(-acts)[:4])
    np.testing.assert_allclose([r["activation"] for r in rows], np.sort(acts)[::-1][:4], rtol=1e-4)
    assert {r["pos"] for r in rows} == {len(x) - 2} and {r["hook"] for r in rows} == {HOOK}


def test_table_names_the_dictionary_and_the_error(topk_sae, capsys):
    path, _ = topk_sae
    assert main(["features", PROMPT, "--model", "tiny-moe", "--features", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("res2: topk SAE, 256 features, k=8, at blocks.2.hook_resid_post")
    assert "relative" in out and "activation" in out


@pytest.mark.parametrize("extra,message", [
    (["--features", "/nonexistent/sae"], "no dictionary at /nonexistent/sae"),
    (["--position", "99"], "--position 99 is outside the prompt's"),
    (["--all", "--position", "1"], "give --position or --all"),
])  # fmt: skip
def test_mistakes_are_one_line(topk_sae, capsys, extra, message):
    path, _ = topk_sae
    argv = ["features", PROMPT, "--model", "tiny-moe", "--features", str(path), *extra]
    if extra[0] == "--features":
        argv = argv[:4] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
