"""Property-based fuzzing (hypothesis) of the CLI and the public API on the small models.

Properties: the CLI exits 0 or 2, a 2 with exactly one `interp: error:` line, never a traceback,
never a file left behind but the one asked for; the API returns or raises `InterpError`.
Examples per test: INTERP_FUZZ_EXAMPLES (default 30, bounded for CI).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import interp
from interp import cli
from interp.errors import InterpError

EXAMPLES = int(os.environ.get("INTERP_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SMALL = ["tiny-moe", "attn-only-1l"]

# Values a user might type for an option: mostly valid ones (so that most runs get past the
# checks and exercise the commands), then out of range, non-finite, not a number.
VALID = ["0", "1", "2", "1", "2", "0.5", "0.9", "3"]
INVALID = ["-1", "nan", "inf", "-inf", "1e999", "abc", "", "99999999999999999999999", "100000",
           "٣", "0x10"]  # fmt: skip
MODELS = ["tiny-moe"] * 6 + ["attn-only-1l", "tiny_moe", "./no/such", "smollm2"]
TEXTS = st.one_of(
    st.text(min_size=1, max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30),
    st.sampled_from(
        [
            "The capital of France is",
            "café 東京",
            "a\x00b",
            "\udcc3\udc28 x",
            " ",
            "안녕",
            "\u200b",
            "@@at",
            "word " * 300,
        ]
    ),  # fmt: skip
)
COMMANDS = {
    "generate": ["-n", "--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed",
                 "--format", "--chat"],
    "journey": ["--position", "--generate", "--format"],
    "coverage": ["--generate", "--tau", "--value-weighted", "--format"],
    "experts": ["--top", "--domain", "--format"],
    "report": ["--generate", "--seed", "--temperature", "--chat", "--no-progress"],
    "models": ["--format", "--verify"],
}  # fmt: skip
MISSPELLED = ["--max-new-token", "--bogus", "--posiion", "--ta", "--temp", "-x"]
FLAGS = {"--chat", "--value-weighted", "--no-progress", "--verify"}


@pytest.fixture(scope="module")
def cached_load():
    """interp.load, remembered per name: the fuzz is about arguments, not loading speed."""
    real, models = interp.load, {}

    def load(name="smollm2-135m", **options):
        if name not in models:
            models[name] = real(name, **options)
        return models[name]

    return load


@st.composite
def argv(draw, workdir: Path):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    words = [command]
    if command != "models":
        n_prompts = draw(st.sampled_from([1, 1, 1, 0, 2] if command in ("experts", "report")
                                         else [1, 1, 1, 0]))  # fmt: skip
        for _ in range(n_prompts):
            kind = draw(st.sampled_from(["text"] * 5 + ["file", "file", "missing-file"]))
            if kind == "text":
                words.append(draw(TEXTS))
            else:
                path = workdir / "prompts.txt"
                if kind == "file":
                    path.write_text(draw(TEXTS).replace("\udcc3\udc28", "?"), errors="replace")
                words.append(f"@{path if kind == 'file' else workdir / 'none.txt'}")
        words += ["--model", draw(st.sampled_from(MODELS))]
    if command == "report":  # -o is required: usually given, usually writable
        words.append("-o")
        words.append(str(draw(st.sampled_from([workdir / "r.html"] * 6 + [
            workdir / "r.txt", workdir / "blocker" / "r.html", workdir / "missing" / "r.html",
            workdir / "r\udcff.html", workdir,
        ]))))  # fmt: skip
    options = st.sampled_from(COMMANDS[command] * 9 + MISSPELLED)  # one in ten misspelled
    for option in draw(st.lists(options, max_size=3)):
        words.append(option)
        if option == "--format":
            valid = ["text", "json"] if command == "generate" else ["table", "csv", "json"]
            words.append(draw(st.sampled_from(valid * 3 + ["yaml"])))
        elif option == "--domain":
            words += draw(st.lists(st.sampled_from(["code", "prose", ""]), min_size=1, max_size=2))
        elif option not in FLAGS:
            words.append(draw(st.sampled_from(VALID if draw(st.integers(0, 3)) else INVALID)))
    return words


def _litter(*directories: Path) -> list[str]:
    return [p.name for d in directories if d.exists() for p in d.rglob(".*")]


@FUZZ
@given(data=st.data())
def test_cli_fuzz(data, cached_load, monkeypatch, tmp_path_factory):
    workdir = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    (workdir / "blocker").write_text("a file where a directory should be")
    cache = workdir.parent / "fuzz-cache"
    monkeypatch.setenv("INTERP_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(interp, "load", cached_load)
    words = data.draw(argv(workdir))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(words)
    err = err.getvalue()
    # Shown by --hypothesis-show-statistics: outcomes per command, and which checks refused.
    event(f"{words[0]} exit {code}")
    if code == 2:
        event("refused: " + " ".join(err.split(":", 3)[-1].split()[:4]))
    assert code in (0, 2), (words, code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith("interp: error: ") and err.count("\n") == 1, (words, err)
    else:
        assert "interp: error" not in err
    made = {p.name for p in workdir.iterdir()} - {"blocker", "prompts.txt"}
    assert made <= ({"r.html", "missing"} if code == 0 and "report" in words else set()), made
    assert not _litter(workdir, cache), words
    shutil.rmtree(workdir)


def _prompts(draw):
    kinds = ["text", "text", "texts", "ids", "ids", "batch", "odd-tensor", "mixed", "other"]
    kind = draw(st.sampled_from(kinds))
    if kind == "text":
        return draw(TEXTS)
    if kind == "texts":
        return draw(st.lists(TEXTS, max_size=3))
    if kind in ("ids", "batch"):
        shape = (draw(st.integers(0, 8)),) if kind == "ids" else (2, draw(st.integers(1, 5)))
        dtype = draw(st.sampled_from([torch.long, torch.long, torch.int32, torch.float32,
                                      torch.bool]))  # fmt: skip
        high = draw(st.sampled_from([2, 64, 64, 2048, 5000]))
        low = draw(st.sampled_from([0, 0, 0, -3]))
        return torch.randint(low, high, shape).to(dtype)
    if kind == "odd-tensor":
        odd = [torch.tensor(3), torch.zeros(1, 2, 3, dtype=torch.long), torch.tensor([1.5, 2.0]),
               torch.tensor([math.nan])]  # fmt: skip
        return draw(st.sampled_from(odd))
    if kind == "mixed":
        return ["text", torch.tensor([1, 2])]
    return draw(st.sampled_from([None, 5, 3.5, b"bytes", {"a": 1}, [None]]))


NUMBERS = st.one_of(
    st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([2**64, 2**64 - 1, -(2**63), 10**30, True, "1", None]),
)  # fmt: skip


@FUZZ
@given(data=st.data())
def test_api_fuzz(data, cached_load):
    model = cached_load(data.draw(st.sampled_from(SMALL)))
    prompts = _prompts(data.draw)
    valid = data.draw(st.integers(0, 2)) > 0  # two in three calls draw only valid values
    fields = data.draw(st.fixed_dictionaries({}, optional={
        "temperature": st.floats(0, 3) if valid else NUMBERS,
        "top_k": st.integers(0, 50) if valid else NUMBERS,
        "top_p": st.floats(0.05, 1) if valid else NUMBERS,
        "seed": st.integers(0, 2**64 - 1) if valid else NUMBERS,
    }))  # fmt: skip
    max_new = data.draw(st.integers(0, 3) if valid else st.one_of(NUMBERS, st.just(10**6)))
    capture = data.draw(st.sampled_from([(), ("residual",), ("attention", "routing"), ("bogus",),
                                         "residual", ("blocks.0.attn.hook_z",)]))  # fmt: skip
    try:
        sampling = interp.Sampling(**fields)
        trace = interp.trace(model, prompts, max_new_tokens=max_new, sampling=sampling,
                             capture=capture)  # fmt: skip
    except InterpError as exc:
        assert str(exc) and "\n" not in str(exc)
        event("InterpError")
        return
    event("traced")
    record = trace.records[0]
    assert record.ids.dtype == torch.long and len(record.ids) == record.n_prompt + int(max_new)
    assert int(record.ids.max()) < model.cfg.d_vocab
    assert len(trace.tokens) == sum(len(r.ids) for r in trace.records)  # frames build too


META = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)  # fmt: skip


@FUZZ
@given(data=st.data())
def test_trace_load_fuzz(data, cached_load, tmp_path_factory):
    saved = tmp_path_factory.getbasetemp() / "fuzz-saved"
    if not saved.exists():
        interp.trace(cached_load("tiny-moe"), "The cat sat").save(saved)
    directory = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    shutil.copytree(saved, directory, dirs_exist_ok=True)
    good = json.loads((directory / "meta.json").read_text())
    damage = data.draw(st.sampled_from(["meta-value", "meta-key", "meta-bytes", "parquet"]))
    if damage == "meta-value":
        good[data.draw(st.sampled_from(sorted(good)))] = data.draw(META)
        (directory / "meta.json").write_text(json.dumps(good))
    elif damage == "meta-key":
        good["cfg"][data.draw(st.sampled_from(sorted(good["cfg"])))] = data.draw(META)
        (directory / "meta.json").write_text(json.dumps(good))
    elif damage == "meta-bytes":
        (directory / "meta.json").write_bytes(data.draw(st.binary(max_size=40)))
    else:
        frame = directory / data.draw(
            st.sampled_from(sorted(p.name for p in saved.glob("*.parquet")))
        )
        whole = frame.read_bytes()
        cut = data.draw(st.integers(0, len(whole)))
        frame.write_bytes(whole[:cut] + data.draw(st.binary(max_size=8)))
    try:
        interp.Trace.load(directory)
        event(f"{damage}: loaded")
    except InterpError as exc:
        assert "\n" not in str(exc)
        event(f"{damage}: InterpError")
    shutil.rmtree(directory)
