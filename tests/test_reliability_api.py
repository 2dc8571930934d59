"""Bad input to the public API: one `InterpError` each (issue 19), on the small models."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

import interp
from interp import validate
from interp.errors import InterpError
from interp.models.zoo import WEIGHTS


@pytest.fixture(scope="module")
def moe():
    return interp.load("tiny-moe")


@pytest.fixture(scope="module")
def native():
    return interp.load("attn-only-1l")


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ("abc \udcc3( def", r"not valid UTF-8 \(byte 0xC3 at character 4\)"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "not 3-D"),
        (torch.tensor(5), "not 0-D"),
        (["text", torch.tensor([1, 2])], "not a mix"),
        (torch.tensor([5.7, 3.0]), "must be integers"),
        (torch.tensor([True, False]), "must be integers"),
        (torch.tensor([1, 2048]), r"\[0, 2048\); got 1..2048"),
        (None, "not NoneType"),
        ("   ", "the prompt is empty"),
    ],
)
def test_trace_refuses_bad_prompts(moe, prompts, message):
    with pytest.raises(InterpError, match=message):
        interp.trace(moe, prompts)


def test_integral_float_ids_are_the_same_ids(moe):
    floats = interp.trace(moe, torch.tensor([5.0, 3.0, 7.0]), capture=())
    ints = interp.trace(moe, torch.tensor([5, 3, 7]), capture=())
    assert floats.records[0].ids.dtype == torch.long
    assert torch.equal(floats.records[0].ids, ints.records[0].ids)
    assert torch.equal(floats.records[0].query_logits, ints.records[0].query_logits)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"temperature": math.nan}, "temperature must be a finite number"),
        ({"temperature": math.inf}, "temperature must be a finite number"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be > 0"),
        ({"top_p": math.nan}, "top_p must be a finite number"),
        ({"top_p": 1.5}, "top_p must be <= 1"),
        ({"top_k": -5}, "top_k must be >= 0"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"seed": 99999999999999999999999}, "seed must be <= 18446744073709551615"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"temperature": "hot"}, "temperature must be a number"),
    ],
)
def test_sampling_checks_its_fields(fields, message):
    with pytest.raises(InterpError, match=message):
        interp.Sampling(**fields)


def test_largest_seed_samples(moe):
    sampling = interp.Sampling(temperature=1.0, seed=validate.MAX_SEED)
    trace = interp.trace(moe, "The cat", max_new_tokens=2, sampling=sampling, capture=())
    assert len(trace.records[0].ids) == trace.records[0].n_prompt + 2


def test_context_is_checked_before_generating(moe, native):
    # tiny-moe's context is 256 tokens: 1,000 words ran and printed before the check existed.
    with pytest.raises(InterpError, match="context is 256 tokens"):
        interp.trace(moe, "word " * 1000)
    n = len(moe.tokenizer("word " * 100, add_special_tokens=False)["input_ids"])
    assert n < 256
    with pytest.raises(InterpError, match=f"the prompt has {n} tokens \\+ 250 new tokens"):
        interp.trace(moe, "word " * 100, max_new_tokens=250)
    with pytest.raises(InterpError, match="context is 64 tokens"):
        interp.trace(native, torch.arange(60), max_new_tokens=5)
    with pytest.raises(InterpError, match="max_new_tokens must be an integer"):
        interp.trace(native, torch.arange(6), max_new_tokens=1.5)


def test_trace_load_refuses_damaged_files(moe, tmp_path):
    saved = interp.trace(moe, "The cat sat").save(tmp_path / "t")
    assert set(interp.Trace.load(saved).meta) >= {"model", "cfg"}
    parquet = saved / "residual.parquet"
    whole = parquet.read_bytes()
    for damaged in (whole[: len(whole) // 2], b"", b"PAR1 not really parquet PAR1"):
        parquet.write_bytes(damaged)
        with pytest.raises(InterpError, match="residual.parquet is corrupt or truncated"):
            interp.Trace.load(saved)
    parquet.write_bytes(whole)
    meta = saved / "meta.json"
    good = json.loads(meta.read_text())
    cases = {
        "{not json": "is not valid JSON",
        "[1, 2]": "must be a JSON object, not a list",
        json.dumps({k: v for k, v in good.items() if k != "cfg"}): "'cfg' is missing",
        json.dumps({**good, "model": 3}): "'model' must be a string, not an integer",
        json.dumps({**good, "cfg": {"n_layers": 1}}): "'cfg': 'n_heads' is missing",
    }
    for text, message in cases.items():
        meta.write_text(text)
        with pytest.raises(InterpError, match=message):
            interp.Trace.load(saved)
    meta.write_bytes(b"\xff\xfe{}")
    with pytest.raises(InterpError, match="not UTF-8 text .byte 0xFF at byte offset 0"):
        interp.Trace.load(saved)


def _copy_model(name: str, tmp_path, edit) -> str:
    target = tmp_path / name
    shutil.copytree(WEIGHTS / name, target)
    config = json.loads((target / "config.json").read_text())
    edit(config)
    (target / "config.json").write_text(json.dumps(config))
    return str(target)


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("tiny-moe", "hidden_size", "big", "hidden_size must be a positive integer, not 'big'"),
        ("tiny-moe", "vocab_size", None, "vocab_size must be a positive integer, not None"),
        ("tiny-moe", "architectures", "OlmoeForCausalLM", "architectures must be a list"),
        ("tiny-moe", "num_hidden_layers", -2, "num_hidden_layers must be a positive integer"),
        ("attn-only-1l", "d_model", "sixty-four", "d_model must be a positive integer"),
        ("attn-only-1l", "n_layers", 1.5, "n_layers must be a positive integer"),
    ],
)
def test_config_with_wrong_types_is_one_line(tmp_path, name, key, value, message):
    path = _copy_model(name, tmp_path, lambda config: config.__setitem__(key, value))
    with pytest.raises(InterpError, match=message) as caught:
        interp.load(path)
    assert "\n" not in str(caught.value)


def test_tokenizer_beyond_the_vocabulary_fails_at_load(tmp_path):
    from transformers import AutoTokenizer

    path = tmp_path / "tiny-moe"
    shutil.copytree(WEIGHTS / "tiny-moe", path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(["<beyond-the-embedding>"])
    tokenizer.save_pretrained(path)
    assert tokenizer.convert_tokens_to_ids("<beyond-the-embedding>") == 2048
    with pytest.raises(InterpError, match="ids up to 2048, but the model embeds only 2048"):
        interp.load(str(path))


def test_model_name_typo_suggests_the_embedded_name():
    with pytest.raises(InterpError, match="did you mean 'smollm2-135m'"):
        interp.load("smollm2")
    with pytest.raises(InterpError, match="did you mean 'tiny-moe'"):
        interp.load("tiny_moe")


def test_output_paths_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.html").mkdir()
    cases = {
        str(tmp_path / "file" / "r.html"): "is a file, not a directory",
        str(tmp_path / "file" / "sub" / "r.html"): "is a file, not a directory",
        str(tmp_path / "dir.html"): "it is a directory",
        str(tmp_path / "r\udcff.html"): "not valid UTF-8",
        "": "empty",
    }
    for path, message in cases.items():
        with pytest.raises(InterpError, match=message):
            validate.output_path(path)
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    if not os.access(readonly, os.W_OK):  # root writes anyway
        with pytest.raises(InterpError, match="not writable"):
            validate.output_path(readonly / "r.html")
    assert validate.output_path(tmp_path / "r.html") == tmp_path / "r.html"
    deep = tmp_path / "new" / "dirs" / "r.html"  # created by the write, as before
    assert validate.output_path(deep) == deep and not deep.parent.exists()
