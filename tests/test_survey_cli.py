"""`interp survey` as a user runs it: readers, bad input, kill -9 and resume, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import HANG_S

from interp.cli import main
from interp.corpus import documents
from interp.survey.data import Corpus
from interp.survey.output import Survey

# The torchrun of the Python running the tests (a venv puts both in one bin/ folder).
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    rows = [{"text": t[:2500], "domain": "code"} for t in documents("code", "validation")[:4]]
    rows += [{"text": t[:900], "domain": "prose"} for t in documents("prose", "validation")[:6]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_readers_agree(corpus_file, tmp_path):
    """.jsonl, .parquet and a datasets save_to_disk directory give the same documents."""
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in corpus_file.read_text().splitlines()]
    pd.DataFrame(rows).to_parquet(tmp_path / "docs.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    want = [(r["domain"], r["text"]) for r in rows]
    for path in [corpus_file, tmp_path / "docs.parquet", tmp_path / "hf"]:
        assert list(Corpus([path]).documents()) == want
    (tmp_path / "a.txt").write_text("some text")
    assert list(Corpus([tmp_path / "a.txt"]).documents()) == [("a", "some text")]


def _bad(tmp_path: Path, name: str) -> list[str]:
    data = tmp_path / name
    if name == "missing.txt":
        pass
    elif name == "empty.txt":
        data.write_text("  \n")
    elif name == "no_text.jsonl":
        data.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    elif name == "broken.parquet":
        data.write_bytes(b"this is not parquet")
    elif name == "short.txt":
        data.write_text("far too short")
    return ["--data", str(data)]


@pytest.mark.parametrize(
    "name, extra, message",
    [
        ("missing.txt", [], "does not exist"),
        ("empty.txt", [], "holds no text"),
        ("no_text.jsonl", [], "no_text.jsonl:2 has no 'text'"),
        ("broken.parquet", [], "as parquet"),
        ("short.txt", [], "fewer than one window"),
        (None, ["--model", "attn-only-1l", "--stats", "experts"], "no routed experts"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, name, extra, message):
    out = tmp_path / "out"
    args = (_bad(tmp_path, name) if name else []) + extra
    before = set(tmp_path.iterdir())
    assert main(["survey", *args, "--out", str(out), "--seq-len", "64", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interp: error:") and message in err[0], err
    assert set(tmp_path.iterdir()) == before  # no output, no checkpoint


def _command(corpus_file, out) -> list[str]:
    return ["survey", "--data", str(corpus_file), "--seq-len", "64", "--batch-size", "2",
            "--checkpoint-every", "2", "--seed", "5", "--out", str(out),
            "--no-progress"]  # fmt: skip


def _same(a: Survey, b: Survey, rtol: float = 0.0) -> None:
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        x, y = a.tables[name], b.tables[name]
        ints = x.select_dtypes("integer").columns
        pd.testing.assert_frame_equal(x[ints], y[ints])  # counts: exactly
        pd.testing.assert_frame_equal(x, y, check_exact=rtol == 0, rtol=max(rtol, 1e-12))


@pytest.fixture(scope="module")
def uninterrupted(corpus_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "survey"
    assert main(_command(corpus_file, out)) == 0
    return Survey.load(out)


def test_kill_and_resume_gives_identical_counts(corpus_file, uninterrupted, tmp_path):
    out = tmp_path / "survey"
    command = [sys.executable, "-m", "interp.cli", *_command(corpus_file, out)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / ".survey.checkpoint"
    deadline = time.time() + HANG_S
    while not list(checkpoints.glob("*.pt")) and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(checkpoints.glob("*.pt"))
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr
    assert not checkpoints.exists()  # cleared once the survey is written
    _same(Survey.load(out), uninterrupted)


@pytest.mark.slow  # torchrun subprocesses
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed")
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_torchrun_ranks_equal_one_process(corpus_file, uninterrupted, tmp_path, ranks):
    """Each rank tokenizes only its own documents (record i on rank i % world: meta's
    per-rank counts), and the totals are one process's. Per-batch MaxVio is over each rank's
    own batches, so it differs; the top tokens are summaries merged by rank, so their counts
    may differ, each within its bound of the exact count."""
    out = tmp_path / "survey"
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(ranks), "-m",
               "interp.cli", *_command(corpus_file, out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = Survey.load(out)
    assert merged.meta["world_size"] == ranks
    assert merged.meta["documents"] == [len(range(r, 10, ranks)) for r in range(ranks)]
    assert uninterrupted.meta["documents"] == [10]
    for key in ("tokens", "windows", "domains"):
        assert merged.meta[key] == uninterrupted.meta[key]
    per_batch = ["max_vio_batch", "max_vio_batch_std"]
    a, b = dict(merged.tables), dict(uninterrupted.tables)
    a["expert_layers"] = a["expert_layers"].drop(columns=per_batch)
    b["expert_layers"] = b["expert_layers"].drop(columns=per_batch)
    tops = [t.pop("expert_tokens").set_index(["layer", "expert", "token_id"]) for t in (a, b)]
    _same(Survey(a, {}), Survey(b, {}), rtol=1e-6)
    both = tops[0].join(tops[1], how="inner", lsuffix="_a", rsuffix="_b")
    assert len(both) > 0.8 * len(tops[1])
    # Both lower bounds of one exact count, each within its error of it.
    assert (both.count_a <= both.count_b + both.error_b).all()
    assert (both.count_b <= both.count_a + both.error_a).all()


def test_report_renders_the_survey(uninterrupted, tmp_path_factory, capsys):
    from html_elements import Elements

    from interp.report.parts import fmt

    directory = tmp_path_factory.getbasetemp() / "plain0" / "survey"
    html_path = tmp_path_factory.mktemp("report") / "survey.html"
    assert main(["report", "--survey", str(directory), "-o", str(html_path)]) == 0
    html = html_path.read_text()
    page = Elements(html)
    ids = [attrs.get("id") for tag, attrs in page.tags if tag == "section"]
    assert ids == ["experts", "heads", "layers"]
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3 and all(src.startswith("data:image/svg+xml") for src in images)
    # The numbers shown are the saved tables' numbers, and the command that made them.
    for value in uninterrupted.expert_layers["balance"]:
        assert f'<td class="num">{fmt(float(value))}</td>' in html
    assert "--checkpoint-every 2 --seed 5" in html
    assert main(["report", "--survey", str(tmp_path_factory.getbasetemp()), "-o", "x.html"]) == 2
