"""`interp experts` on tiny-moe: its numbers are the analysis's numbers, bad input is one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import interp
from interp import cli
from interp.analysis import experts as ex
from interp.runs.experts import measure

CODE = "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n"
PROSE = "The module provides functions for working with files and directories in a portable way."


@pytest.fixture(scope="module")
def tiny_moe():
    return interp.load("tiny-moe")


def test_measure_equals_the_analysis_of_the_trace(tiny_moe):
    result = measure(tiny_moe, [CODE, PROSE], ["code", "prose"], top=2)
    routing = interp.trace(tiny_moe, [CODE, PROSE], capture=("routing",)).routing
    expected = ex.balance(routing)
    layers = result["layers"]
    assert list(layers.layer) == [0, 1, 2, 3]
    assert np.allclose(layers.balance, expected.balance)
    assert np.allclose(layers.overlap, ex.temporal_locality(routing).overlap)
    assert (layers.chance == 2 / 16).all()
    js = ex.domain_divergence(routing, {0: "code", 1: "prose"})
    assert np.allclose(result["divergence"].js, js.js)
    # Code and prose route differently somewhere: well above zero in some layer.
    assert result["divergence"].js.max() > 0.2
    top = result["domains"]
    assert (top.groupby(["layer", "domain"]).size() == 2).all()
    assert (top.load <= 1).all() and (top.load > 0).all()


def test_table_csv_and_json(capsys):
    assert cli.main(["experts", CODE, PROSE, "--domain", "code", "prose"]) == 0
    out = capsys.readouterr().out
    assert "16 experts per layer, top-2" in out and "Jensen-Shannon" in out
    assert "Tokens: code 27, prose 28." in out  # tiny-moe's BPE; no BOS is added
    # One row per layer in each table: per-layer metrics, top experts, JS per domain pair.
    assert len(re.findall(r"^\s+[0-3]\s+55\s+[\d.]+", out, re.M)) == 4
    assert len(re.findall(r"^[0-3](\s+\d+ \(0\.\d\d\)){6}$", out, re.M)) == 4
    assert len(re.findall(r"^\s+[0-3]\s+code\s+prose\s+0\.\d+$", out, re.M)) == 4
    assert cli.main(["experts", CODE, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("layer,tokens,balance,entropy,max_vio,cv,dead,")
    assert cli.main(["experts", CODE, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["layers"]) == 4 and data["labels"] == ["p0"] and data["tokens"] == {"p0": 27}
    assert "divergence" not in data  # one domain: nothing to compare


def test_mistakes_are_caught_before_loading_a_model(capsys, monkeypatch):
    def no_loading(name, **options):
        raise AssertionError("loaded a model for a mistake in the arguments")

    monkeypatch.setattr(interp, "load", no_loading)
    assert cli.main(["experts", CODE, PROSE, "--domain", "code"]) == 2
    assert cli.main(["experts", CODE, ""]) == 2
    assert capsys.readouterr().err.count("interp: error:") == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["experts", CODE, PROSE, "--domain", "code"], "1 domain labels for 2 prompts"),
        (["experts", "  "], "empty"),
        (["experts", CODE, "--model", "no-such-model"], "no-such-model"),
        (["experts", "hello", "--model", "smollm2-135m"], "has no MoE layers"),
        (["experts", CODE, "--top", "0"], "top must be > 0"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("interp: error:") and message in err and "\n" not in err


def test_routing_adds_nothing_to_the_kv_cache(tiny_moe):
    """The cache holds keys and values of attention only: MoE routing leaves no trace there."""
    gen = interp.trace(tiny_moe, CODE, max_new_tokens=3, capture=("routing",))
    cfg = tiny_moe.cfg
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_position = 2 * cfg.n_layers * kv_heads * cfg.d_head * 4  # K and V, float32
    kv = gen.kv_cache
    assert len(kv) == 3 and (kv.measured_bytes == kv.positions * per_position).all()
    assert gen.routing.pos.max() == len(gen.records[0].ids) - 1  # generated tokens were routed
