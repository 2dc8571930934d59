"""The shipped attention-only models: induction in two layers, not in one; TL-native file format."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from interp.analysis.induction import (
    ablation_hooks,
    head_scores,
    icl_losses,
    repeated_tokens,
    token_logprobs,
)
from interp.errors import InterpError
from interp.models.native import load_native, save_native
from interp.models.zoo import WEIGHTS

BOS = 0  # experiments/induction_needs_two_layers.py starts every training row with token 0
SEQ_LEN = 24


@pytest.fixture(scope="module")
def probe():
    return repeated_tokens(32, SEQ_LEN, seed=123, low=1, high=128, sink_token=BOS)


def run_probe(model, tokens):
    """(head scores, icl losses) of `model` on `repeated_tokens` rows."""
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    n_layers = model.cfg.n_layers
    patterns = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(n_layers)], 1)
    scores = head_scores(patterns, SEQ_LEN, has_sink=True)
    return scores, icl_losses(token_logprobs(logits, tokens), SEQ_LEN, has_sink=True)


@pytest.fixture(scope="module")
def two_layer():
    return load_native(WEIGHTS / "attn-only-2l")


def test_two_layers_grow_an_induction_circuit(two_layer, probe):
    assert two_layer.tokenizer is None and two_layer.cfg.attn_only
    scores, losses = run_probe(two_layer, probe)
    by_layer = scores.groupby("layer")
    assert by_layer.induction.max()[1] > 0.5
    assert by_layer.previous_token.max()[0] > 0.5
    # In-context copying: the repeat is far easier to predict than the random first copy.
    assert losses["second_copy_loss"] < 0.1 * losses["first_copy_loss"]


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablating_either_half_of_the_circuit_breaks_copying(two_layer, probe, mode):
    scores, losses = run_probe(two_layer, probe)
    z = two_layer.run_with_cache(probe, names_filter=lambda n: n.endswith("hook_z"))[1]
    means = torch.stack([z[f"blocks.{i}.attn.hook_z"][:, 1:].mean((0, 1)) for i in range(2)])
    induction = scores[scores.induction > 0.5]
    previous = scores[(scores.layer == 0) & (scores.previous_token > 0.3)]
    for heads in (induction, previous):
        hooks = ablation_hooks(list(zip(heads.layer, heads["head"])), mode, means)
        ablated = two_layer.run_with_hooks(probe, fwd_hooks=hooks)
        after = icl_losses(token_logprobs(ablated, probe), SEQ_LEN, has_sink=True)
        # Without induction heads, or without the previous-token heads their keys read
        # (K-composition), the second copy is nearly as hard as the first.
        assert after["second_copy_loss"] > 0.8 * losses["first_copy_loss"]


def test_one_layer_has_no_induction_head(probe):
    model = load_native(WEIGHTS / "attn-only-1l")
    scores, losses = run_probe(model, probe)
    assert scores.induction.max() < 0.2
    # A lone layer can raise every token it has seen, not the one that comes next: on the
    # second copy it does no better than a uniform guess among the first copy's tokens.
    assert losses["second_copy_loss"] > math.log(SEQ_LEN)


def test_zoo_names_load_native_models():
    import interp

    model = interp.load("attn-only-1l")
    assert model.cfg.n_layers == 1 and model.tokenizer is None


def test_save_load_round_trip_gives_identical_logits(two_layer, probe, tmp_path):
    save_native(two_layer, two_layer.cfg, tmp_path / "copy")
    again = load_native(tmp_path / "copy")
    assert torch.equal(again(probe), two_layer(probe))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_weights_raise_interp_error(tmp_path, damage):
    shutil.copytree(WEIGHTS / "attn-only-1l", tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x07" * 64)
    else:
        weights.unlink()
    with pytest.raises(InterpError, match="model.safetensors"):
        load_native(tmp_path / "model")


def test_config_mismatch_and_bad_json_raise_interp_error(tmp_path):
    shutil.copytree(WEIGHTS / "attn-only-1l", tmp_path / "model")
    config = tmp_path / "model" / "config.json"
    config.write_text(config.read_text().replace('"n_layers": 1', '"n_layers": 2'))
    with pytest.raises(InterpError, match="does not match"):
        load_native(tmp_path / "model")
    config.write_text("{not json")
    with pytest.raises(InterpError, match="not valid JSON"):
        load_native(tmp_path / "model")


def cli_main(argv, monkeypatch):
    from interp import cli

    monkeypatch.setattr(cli, "COMMANDS", ["induction"])  # whatever else is registered
    return cli.main(["induction", *argv])


def test_cli_finds_the_induction_heads_of_the_two_layer_model(monkeypatch, capsys):
    assert cli_main(["--model", "attn-only-2l", "--top", "5"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "second copy" in out and "induction_head" in out and "random single heads" in out
    found = out.split("induction heads: ")[1].split()[0]
    assert found.startswith("1.")  # a layer-1 head
    assert cli_main(["--model", "attn-only-2l", "--format", "csv"], monkeypatch) == 0
    header, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("layer,head,kv_head,induction,previous_token,duplicate_token")
    assert len(rows) == 8  # every head, as --top 10 > 8
    assert cli_main(["--model", "attn-only-1l", "--format", "json"], monkeypatch) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["probe"]["seq_len"] == 31  # as many as the 64-token context holds
    assert not any(head["induction_head"] for head in data["heads"])
    assert {"heads", "null", "ablation", "effects", "losses"} <= set(data)


@pytest.mark.parametrize(
    "argv, message",
    [
        # A path, so the check stays offline and fast (hub names are tested in test_load).
        (["--model", "./no/such/model"], "not a model directory"),
        (["--model", "attn-only-1l", "--seq-len", "32"], "seq_len must be in 2..31"),
        (["--model", "attn-only-1l", "--seq-len", "1"], "seq_len must be in 2..31"),
        (["--model", "attn-only-1l", "--top", "0"], "top must be > 0"),
        (["--model", "attn-only-1l", "--batch", "0"], "batch must be > 0"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, message, monkeypatch, capsys):
    assert cli_main(argv, monkeypatch) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_generation_without_a_kv_cache_matches_the_full_forward(two_layer):
    """The native models keep no KV cache: each generated step's logits must still be the
    full forward's at that position (a cache-less one-token step would see only itself)."""
    import interp

    prompt = torch.tensor([1, 5, 7, 9, 5, 7])
    trace = interp.trace(two_layer, prompt, max_new_tokens=4)
    record = trace.records[0]
    full = two_layer(record.ids[None])[0]
    assert torch.allclose(record.query_logits, full[len(prompt) - 1 :], atol=1e-5)
    # Greedy: each chosen token is the argmax of the full forward one position earlier.
    assert record.ids[len(prompt) :].tolist() == full[len(prompt) - 1 : -1].argmax(-1).tolist()
    assert record.ids[len(prompt) : len(prompt) + 2].tolist() == [9, 5]  # induction continues
    assert list(trace.sampling["step"].unique()) == [1, 2, 3, 4]
