"""The issue-23 experiments run with --quick on the shipped tiny-hybrid and tiny-deepseek-v4
(their controls are quick-trained on first use into reports/controls/) and print what they
promise; the full runs (longer-trained controls) are slow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
needs_v4 = pytest.mark.skipif(
    not (ROOT / "interp/models/weights/tiny-deepseek-v4/config.json").is_file(),
    reason="tiny-deepseek-v4 is not trained yet (experiments/train_tiny_deepseek_v4.py)",
)


def run(script: str, out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    return done.stdout


def check_position(text: str) -> None:
    rows = re.findall(r"^(hook_embed|blocks\.\d\.hook_resid_post)\s+(\S+)\s+(-?[\d.]+)\s+(\S+)"
                      r"\s+(-?[\d.]+)$", text, re.M)  # fmt: skip
    # One row per layer plus the embeddings; the hybrid's Mamba2 layers face attention.
    assert len(rows) == 7
    assert [r[1] for r in rows[1:]] == ["mamba2", "moe", "mamba2", "moe", "attention", "moe"]
    assert [r[3] for r in rows[1:]] == ["attention", "moe"] * 3
    assert all(float(r[2]) <= 1 and float(r[4]) <= 1 for r in rows)  # R² never exceeds 1
    assert re.search(r"^(held|not held): after the first Mamba2 layer R² = ", text, re.M)


def check_highways(text: str) -> None:
    rows = re.findall(r"^(\d)\.(attn|moe)\s+([\d.]+) \(mean ([\d.]+)\)\s+([\d.e+-]+)\s+([\d.]+)",
                      text, re.M)  # fmt: skip
    assert len(rows) == 8  # 4 layers x (attention, MoE)
    # Each comb is non-negative with row and column sums within its DS error of 1, so the
    # composite's max row/column sum is at most the product of (1 + error): submultiplicative.
    # (Exact Sinkhorn convergence, within 1e-4, is tested on random checkpoints in
    # test_deepseek_v4.py; the trained model's 20 iterations leave ~3e-2.)
    bound = 1.0
    for _, _, gain, mean, ds_err, _ in rows:
        bound *= 1 + float(ds_err) * 1.05  # the error is printed to two digits
        assert 1 - 1e-4 <= float(mean) <= float(gain) <= bound + 1e-4
    assert len(re.findall(r"^  (tiny-deepseek-v4|no Sinkhorn)\s+layer \d:", text, re.M)) == 8
    assert re.search(r"^(held|not held): with Sinkhorn the composite gain stays", text, re.M)


def test_position_without_encoding_quick(tmp_path):
    check_position(run("position_without_encoding.py", tmp_path / "p.png", "--quick"))


@needs_v4
def test_residual_highways_quick(tmp_path):
    check_highways(run("residual_highways.py", tmp_path / "r.png", "--quick"))


@pytest.mark.slow
def test_position_without_encoding_full(tmp_path):
    check_position(run("position_without_encoding.py", tmp_path / "p.png"))


@needs_v4
@pytest.mark.slow
def test_residual_highways_full(tmp_path):
    check_highways(run("residual_highways.py", tmp_path / "r.png"))


def test_memory_palace_quick(tmp_path):
    text = run("memory_palace.py", tmp_path / "m.png", "--quick")
    # The formulas equal every tensor byte of the real caches, per layer, at every n.
    assert "held: largest |formula - measured| over every layer and n: 0 bytes" in text
    rows = dict(re.findall(r"^  (\S+(?: K2)?)\s+n=\s*4096:\s+([\d,]+) B/token", text, re.M))
    # SmolLM2-135M by hand: 30 layers x K and V x 3 KV heads x 64 dims x 2 bytes (bfloat16).
    assert int(rows["SmolLM2-135M"].replace(",", "")) == 30 * 2 * 3 * 64 * 2
    # MLA caches its latent: 61 layers x (512 + 64) x 2 bytes, whatever the head count.
    assert rows["DeepSeek-V3"] == rows["Kimi K2"] == f"{61 * 576 * 2:,}"
    # Nemotron-H-8B's published pattern: 24 Mamba2, 4 attention, 24 MLP layers.
    assert "Nemotron-H-8B layers (its pattern): mamba2 24, attention 4, mlp 24" in text
    # By hand at 4096 tokens: 4 attention layers x K and V x 8 KV heads x 128 x 2 bytes, and 24
    # fixed Mamba2 states: float32 SSM state 128 heads x 64 x 128 x 4 bytes, bf16 conv window
    # (128 x 64 + 2 x 8 groups x 128) channels x 4 taps x 2 bytes.
    mamba = 24 * (128 * 64 * 128 * 4 + (128 * 64 + 2 * 8 * 128) * 4 * 2)
    assert rows["Nemotron-H-8B"] == f"{4 * 2 * 8 * 128 * 2 + mamba / 4096:,.0f}"
