"""Files that are not what they claim (tests/hostile.py builds them): each is refused with one
line, `interp: error: ...` and exit 2 in the CLI, `InterpError` in the API; never a traceback
and never a half-written output."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import hostile
import pytest

import interp
from interp import cli
from interp.errors import InterpError
from interp.models.zoo import ZOO


def run_cli(words: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(words)
    return code, err.getvalue()


def refused(words: list[str], *expected: str) -> str:
    code, err = run_cli(words)
    assert code == 2 and err.startswith("interp: error: ") and err.count("\n") == 1, (code, err)
    for part in expected:
        assert part in err, (part, err)
    return err


@pytest.fixture(scope="session")
def saved_run(tmp_path_factory) -> Path:
    model = interp.load("tiny-moe")
    return interp.trace(model, ["The cat sat", "A dog"]).save(tmp_path_factory.mktemp("run") / "r")


@pytest.fixture(scope="session")
def saved_survey(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("survey") / "s"
    code, err = run_cli(["survey", "--model", "tiny-moe", "--tokens", "400", "--seq-len", "64",
                         "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0, err
    return out


EXPECTED_RUN = {
    "deep meta": "nests JSON more than 64 levels",
    "meta is a list": "must be a JSON object, not a list",
    "list for an object": "'empty_frames' must be an object, not a list",
    "string for a number": "'temperature' must be a number, not a string",
    "string for a size": "'n_layers' must be an integer, not a string",
    "huge int in meta": "Exceeds the limit (4300 digits)",
    "meta not UTF-8": "byte 0xFF at byte offset 26",
    "short token table": "positions 0..T-1",
    "float token ids": "'token_id' must hold ints",
    "text token ids": "'token_id' must hold ints",
    "huge prompt": "prompts must be numbered 0..P-1",
    "huge position": "column 'pos' must lie in [0, 256)",
    "huge layer": "column 'layer' must lie in [0, 5)",
    "huge text": "at most 16,777,216 characters",
    "corrupt frame": "residual.parquet is corrupt or truncated",
    "no tokens": "has no tokens.parquet",
}


def test_saved_run_cases_are_all_expected():
    assert set(EXPECTED_RUN) == set(hostile.SAVED_RUN)


@pytest.mark.parametrize("case", sorted(hostile.SAVED_RUN))
def test_report_from_a_hostile_saved_run(case, saved_run, tmp_path):
    damaged = hostile.build({case: hostile.SAVED_RUN[case]}, saved_run, tmp_path)[case]
    out = tmp_path / "r.html"
    refused(["report", "--from", str(damaged), "-o", str(out), "--no-progress"],
            EXPECTED_RUN[case])  # fmt: skip
    assert not out.exists()
    with pytest.raises(InterpError):
        interp.Trace.load(damaged)


def test_the_good_saved_run_still_reports(saved_run, tmp_path):
    code, err = run_cli(["report", "--from", str(saved_run), "-o", str(tmp_path / "r.html"),
                         "--no-progress"])  # fmt: skip
    assert code == 0, err


EXPECTED_SURVEY = {
    "bad JSON": "meta.json is not valid JSON",
    "deep meta": "nests JSON more than 64 levels",
    "no domains": "'domains' is missing",
    "wrong-typed tokens": "'tokens' must be an integer, not a string",
    "domains not a list": "'domains' must be a list of strings, not an integer",
    "corrupt parquet": "experts.parquet is corrupt or truncated",
    "missing column": "norms.parquet has no 'norm' column",
    "text for a count": "column 'count' must hold ints",
    "non-UTF-8 meta": "byte 0xFF at byte offset 27",
    "missing table": "expert_layers.parquet is missing",
}


def test_survey_cases_are_all_expected():
    assert set(EXPECTED_SURVEY) == set(hostile.SURVEY)


@pytest.mark.parametrize("case", sorted(hostile.SURVEY))
def test_report_from_a_hostile_survey(case, saved_survey, tmp_path):
    damaged = hostile.build({case: hostile.SURVEY[case]}, saved_survey, tmp_path)[case]
    out = tmp_path / "s.html"
    refused(["report", "--survey", str(damaged), "-o", str(out)], EXPECTED_SURVEY[case])
    assert not out.exists()


def test_the_good_survey_still_reports(saved_survey, tmp_path):
    code, err = run_cli(["report", "--survey", str(saved_survey), "-o", str(tmp_path / "s.html")])
    assert code == 0, err


EXPECTED_CORPUS = {
    "binary file": "blob.bin is not UTF-8 text (byte 0x80 at byte offset 128)",
    "non-UTF-8 text": "notes.txt is not UTF-8 text (byte 0xFF at byte offset 15)",
    "non-UTF-8 jsonl": "rows.jsonl:2 is not UTF-8 text (byte 0xFF at byte offset 40)",
    "huge integer": "big.jsonl:1 is not valid JSON: Exceeds the limit (4300 digits)",
    "deep jsonl": "deep.jsonl:1 nests JSON more than 64 levels",
    "corrupt parquet": "cannot read",
    "directory that is no datasets save": "is not a datasets save_to_disk directory",
    "plain directory": "is a directory but no datasets save_to_disk directory",
}


def test_survey_data_cases_are_all_expected(tmp_path):
    assert set(EXPECTED_CORPUS) == set(hostile.corpus_files(tmp_path))


@pytest.mark.parametrize("case", sorted(EXPECTED_CORPUS))
def test_survey_of_a_hostile_corpus(case, tmp_path):
    path = hostile.corpus_files(tmp_path / "data")[case]
    out = tmp_path / "out"
    refused(["survey", "--model", "tiny-moe", "--data", str(path), "--tokens", "64",
             "--out", str(out), "--no-progress"], EXPECTED_CORPUS[case])  # fmt: skip
    assert not out.exists()


EXPECTED_MODEL_DIR = {
    "more experts per token than experts": "num_experts_per_tok (17) exceeds num_experts (16)",
    "chat template loops": "chat template failed (OverflowError",
    "chat template escapes": "chat template failed (SecurityError",
    "pickled weights": "weights only from .safetensors files; its weights are pickled "
    "(pytorch_model.bin)",
    # OLMoE by hand: embedding and unembedding, final norm; per layer q k v o, q and k norms,
    # router, 16 experts of gate / up / down, two norms (d 65536, d_ff 262144, 4 layers).
    "beyond the machine's memory": "({:,} parameters in float32) needs {:,.1f} GiB; the CPU".format(
        params := 2 * 2048 * 65536
        + 65536
        + 4 * (4 * 65536**2 + 2 * 65536 + 16 * 65536 + 16 * 3 * 65536 * 262144 + 2 * 65536),
        params * 4 / 2**30,
    ),  # fmt: skip
    "more layers than the weights": "config.json asks for 300 layers; the weights hold 4",
    "deep config": "nests JSON more than 64 levels",
    "config not UTF-8": "config.json is not UTF-8 text (byte 0xFF at byte offset 22)",
}


def test_model_dir_cases_are_all_expected():
    assert set(EXPECTED_MODEL_DIR) == set(hostile.MODEL_DIR)


@pytest.mark.parametrize("case", sorted(EXPECTED_MODEL_DIR))
def test_a_hostile_model_directory(case, tmp_path):
    good = Path(ZOO["tiny-moe"].path())
    damaged = hostile.build({case: hostile.MODEL_DIR[case]}, good, tmp_path)[case]
    chat = ["--chat"] if "template" in case else []
    refused(["generate", "The cat", "--model", str(damaged), "-n", "1", *chat],
            EXPECTED_MODEL_DIR[case])  # fmt: skip
    if not chat:
        with pytest.raises(InterpError):
            interp.load(str(damaged))


def test_saved_cfg_schema_covers_every_model_fact():
    """A saved run's cfg is ModelFacts as JSON: a fact without a type in the schema would make
    every saved run of every model unreadable (it did, when layer kinds were added)."""
    from dataclasses import fields

    from interp.trace.facts import ModelFacts
    from interp.trace.saved import CFG, CFG_OPTIONAL

    assert set(CFG) | set(CFG_OPTIONAL) == {f.name for f in fields(ModelFacts)}
