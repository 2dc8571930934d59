"""Smoke tests: the smollm experiments run with --quick and print the numbers they promise
(each loads a model in a subprocess, so all are slow). moe_routing and prompt_keys are in
test_experiments_moe_keys.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HANG_S

ROOT = Path(__file__).resolve().parents[1]


def run_quick(script: str, out: Path, *extra: str) -> str:
    command = [sys.executable, str(ROOT / "experiments" / script), "--quick", "--seed", "3"]
    done = subprocess.run(
        command + ["--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("seed 3; command: "), done.stdout[:200]
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    return done.stdout


@pytest.mark.slow
def test_token_journey(tmp_path):
    text = run_quick("token_journey.py", tmp_path / "journey.png")
    assert "following token ' is' at position 4" in text
    # One lens rank per layer; the last layer is the model's output, where its choice ranks 0.
    ranks = re.search(r"^rank of '␣Paris' in the lens after layers 0\.\.29: ([\d ]+)$", text, re.M)
    assert ranks and ranks.group(1).split()[-1] == "0" and len(ranks.group(1).split()) == 30
    assert re.search(r"^lens decision depth: layer \d+ of 29;", text, re.M)
    # SmolLM2: 2 (K, V) x 30 layers x 3 KV heads x 64 dims x 4 bytes per position, a third of MHA.
    assert "cache grows [46080] bytes per position; MHA would hold 3.0x" in text
    assert "measured == predicted: True" in text


@pytest.mark.slow
def test_delayed_feedback(tmp_path):
    text = run_quick("delayed_feedback.py", tmp_path / "delayed.png")
    table = dict(re.findall(r"^([0124])\s+([\d.]+) ±", text, flags=re.M))
    assert set(table) == {"0", "1", "2", "4"}  # one row per delay, loss first
    # Hearing nothing new, the jammed model cannot keep to what it meant to say.
    assert float(table["4"]) > float(table["0"])
    for metric in ("loss", "rep2", "stutter", "entropy"):
        assert re.search(rf"^{metric}: grows with every step of d: (True|False)$", text, re.M)


@pytest.mark.slow
def test_layer_roles(tmp_path):
    text = run_quick("layer_roles.py", tmp_path / "roles.png")
    counts = re.findall(r"^(punctuation|function|word piece|content|number)\s+(\d+)\s+", text, re.M)
    assert counts and sum(int(n) for _, n in counts) == 47  # 1 window x 48 tokens - 1
    kinds = "|".join(kind for kind, _ in counts)
    medians = re.findall(rf"^(?:{kinds})\s+\d+\s+([\d.]+)", text, re.M)
    assert len(medians) == len(counts) and all(0 <= float(m) <= 29 for m in medians)
    assert re.search(r"on all positions: (True|False)$", text, re.M)


def test_a_mistake_is_one_line_and_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for extra in (["--model", "no-such-model"], ["--out", str(blocker / "x.png")]):
        command = [sys.executable, str(ROOT / "experiments" / "moe_routing.py"), "--quick", *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=HANG_S,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.startswith("moe_routing.py: error: ") and done.stderr.count("\n") == 1
    assert os.listdir(tmp_path) == ["a_file"]  # nothing half-written
