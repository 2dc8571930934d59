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

import hostile
import pandas as pd
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
        key = (name, *sorted(options.items()))
        if key not in models:
            models[key] = real(name, **options)
        return models[key]

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
        if command != "models" and draw(st.integers(0, 4)) == 0:
            words += draw(st.sampled_from([["--device", "cpu"], ["--device", "cuda"],
                                           ["--device", "tpu"], ["--dtype", "float32"],
                                           ["--dtype", "int8"], ["--n-devices", "0"]]))  # fmt: skip
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
    damage = data.draw(st.sampled_from(["meta-value", "meta-key", "meta-bytes", "parquet",
                                        "column", "hostile"]))  # fmt: skip
    if damage == "meta-value":
        good[data.draw(st.sampled_from(sorted(good)))] = data.draw(META)
        (directory / "meta.json").write_text(json.dumps(good))
    elif damage == "meta-key":
        good["cfg"][data.draw(st.sampled_from(sorted(good["cfg"])))] = data.draw(META)
        (directory / "meta.json").write_text(json.dumps(good))
    elif damage == "meta-bytes":
        (directory / "meta.json").write_bytes(data.draw(st.binary(max_size=40)))
    elif damage == "parquet":
        frame = directory / data.draw(
            st.sampled_from(sorted(p.name for p in saved.glob("*.parquet")))
        )
        whole = frame.read_bytes()
        cut = data.draw(st.integers(0, len(whole)))
        frame.write_bytes(whole[:cut] + data.draw(st.binary(max_size=8)))
    elif damage == "column":
        _damage_table(data, directory)
    else:
        hostile.SAVED_RUN[data.draw(st.sampled_from(sorted(hostile.SAVED_RUN)))](directory)
    trace = _loaded_or_refused(lambda: interp.Trace.load(directory), f"saved run {damage}")
    if trace is not None:  # what loads, a report can read: its inputs and its provenance
        from interp.report.html import _runs
        from interp.report.inputs import ReportInputs

        _loaded_or_refused(lambda: _runs(ReportInputs([trace], [{}])), f"report inputs {damage}")
    shutil.rmtree(directory)


# -- loaders: every file interp reads, damaged at random or by the hostile corpus ----------
def _loaded_or_refused(call, label: str):
    """The loader's property: it returns, or raises one `InterpError` line."""
    try:
        result = call()
    except InterpError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)
        event(f"{label}: InterpError")
        return None
    event(f"{label}: loaded")
    return result


def _damage_table(data, directory: Path) -> None:
    """One column of one table: its values replaced by drawn ones (any kind), or the file cut."""
    names = sorted(p.name for p in directory.glob("*.parquet"))
    path = directory / data.draw(st.sampled_from(names))
    frame = pd.read_parquet(path)
    if frame.empty or data.draw(st.booleans()):
        whole = path.read_bytes()
        path.write_bytes(whole[: data.draw(st.integers(0, len(whole)))])
        return
    column = data.draw(st.sampled_from(list(frame.columns)))
    value = data.draw(st.one_of(st.integers(-(2**62), 2**62), st.floats(), st.text(max_size=5),
                                st.booleans(), st.none()))  # fmt: skip
    frame[column] = [value] * len(frame)
    try:
        frame.to_parquet(path, index=False)
    except (ValueError, TypeError, OverflowError, ImportError):  # pyarrow cannot write it
        path.write_bytes(b"")


def _damage_meta(data, directory: Path) -> None:
    meta_file = directory / "meta.json"
    good = json.loads(meta_file.read_text())
    where = data.draw(st.sampled_from(["top", "nested", "bytes"]))
    if where == "bytes":
        odd = [b"[" * 5000, hostile.HUGE_INT.encode(), hostile.NOT_UTF8]
        meta_file.write_bytes(data.draw(st.one_of(st.binary(max_size=40), st.sampled_from(odd))))
        return
    target = good
    if where == "nested":
        target = good[data.draw(st.sampled_from(sorted(k for k, v in good.items()
                                                       if isinstance(v, dict))))]  # fmt: skip
    if target:
        target[data.draw(st.sampled_from(sorted(target)))] = data.draw(META)
    meta_file.write_text(json.dumps(good))


@pytest.fixture(scope="module")
def saved_survey(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-survey") / "s"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["survey", "--model", "tiny-moe", "--tokens", "300", "--seq-len", "64",
                         "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    return out


@FUZZ
@given(data=st.data())
def test_survey_load_fuzz(data, saved_survey, tmp_path_factory):
    from interp.report.survey import build_survey_report
    from interp.survey.output import Survey

    directory = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "s"
    kind = data.draw(st.sampled_from(["meta", "table", "hostile"]))
    shutil.copytree(saved_survey, directory)
    if kind == "meta":
        _damage_meta(data, directory)
    elif kind == "table":
        _damage_table(data, directory)
    else:
        hostile.SURVEY[data.draw(st.sampled_from(sorted(hostile.SURVEY)))](directory)
    out = directory.parent / "s.html"
    if _loaded_or_refused(lambda: Survey.load(directory), f"survey {kind}") is not None:
        _loaded_or_refused(lambda: build_survey_report(directory, out), f"survey report {kind}")
    shutil.rmtree(directory.parent)


@FUZZ
@given(data=st.data())
def test_corpus_fuzz(data, tmp_path_factory):
    from interp.survey.data import Corpus

    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    kind = data.draw(st.sampled_from(["bytes", "jsonl", "hostile"]))
    if kind == "bytes":
        path = root / data.draw(st.sampled_from(["a.txt", "a.jsonl", "a.parquet", "a"]))
        path.write_bytes(data.draw(st.binary(max_size=200)))
    elif kind == "jsonl":
        path = root / "rows.jsonl"
        rows = data.draw(st.lists(st.one_of(META, st.fixed_dictionaries(
            {"text": st.one_of(st.text(max_size=20), META)}, optional={"domain": META})),
            max_size=4))  # fmt: skip
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        path = data.draw(st.sampled_from(sorted(hostile.corpus_files(root).items())))[1]
    _loaded_or_refused(lambda: Corpus([path]), f"corpus {kind}")
    shutil.rmtree(root)


CONFIG_VALUES = st.one_of(META, st.integers(-3, 300), st.sampled_from([0, 2**40, 10**30, "1e3"]))


@FUZZ
@given(data=st.data())
def test_model_dir_fuzz(data, tmp_path_factory):
    from interp.models.zoo import ZOO

    directory = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "m"
    shutil.copytree(ZOO["tiny-moe"].path(), directory)
    kind = data.draw(st.sampled_from(["config", "config", "bytes", "hostile"]))
    if kind == "config":
        config_file = directory / "config.json"
        config = json.loads(config_file.read_text())
        config[data.draw(st.sampled_from(sorted(config)))] = data.draw(CONFIG_VALUES)
        config_file.write_text(json.dumps(config))
    elif kind == "bytes":
        name = data.draw(st.sampled_from(["config.json", "model.safetensors", "tokenizer.json"]))
        whole = (directory / name).read_bytes()
        cut = data.draw(st.integers(0, min(len(whole), 4096)))
        (directory / name).write_bytes(whole[:cut] + data.draw(st.binary(max_size=16)))
    else:
        loading = sorted(case for case in hostile.MODEL_DIR if "template" not in case)
        case = data.draw(st.sampled_from(loading))
        hostile.MODEL_DIR[case](directory)
    model = _loaded_or_refused(lambda: interp.load(str(directory)), f"model dir {kind}")
    if model is not None:  # what loads must also run
        _loaded_or_refused(lambda: interp.trace(model, "The cat"), f"model dir {kind} traced")
    shutil.rmtree(directory.parent)


TEMPLATES = st.one_of(
    st.text(max_size=30),
    st.sampled_from([hostile.LOOPING_TEMPLATE, hostile.ESCAPING_TEMPLATE, "{{ messages[9] }}",
                     "{% for m in messages %}{{ m.content }}", "{{ 1 / 0 }}",
                     "{{ raise_exception('no') }}", "{{ '' }}", "{{ messages[0]['content'] }}",
                     "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
                     "{{ messages[0].content * 10**7 }}"]),
)  # fmt: skip


@FUZZ
@given(template=TEMPLATES)
def test_chat_template_fuzz(template, cached_load):
    from interp.prompts import format_prompt

    tokenizer = cached_load("tiny-moe").tokenizer
    previous = tokenizer.chat_template
    tokenizer.chat_template = template
    try:
        _loaded_or_refused(lambda: format_prompt(tokenizer, "The cat", chat=True), "chat template")
    finally:
        tokenizer.chat_template = previous
