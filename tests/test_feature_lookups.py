"""experiments/feature_lookups.py: its control choice and direct effects (fast), and the
--quick run on the shipped dictionary (slow: smollm2)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from interp.features.load import shipped

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
SPEC = importlib.util.spec_from_file_location("lookups", ROOT / "experiments/feature_lookups.py")
lookups = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(lookups)


def test_controls_are_active_features_nearest_in_log_density():
    density = torch.tensor([0.1, 0.2, 0.05, 0.001, 0.09, 0.5])
    active = torch.tensor([0, 1, 2, 3, 4])  # feature 5 is not active: never a control
    assert lookups.controls(active, density, 0, 3) == [4, 2, 1]  # |log ratio| .11, .69, .69


def test_direct_effect_is_activation_times_decoder_projection():
    g = torch.Generator().manual_seed(0)
    acts, W_dec, u = torch.rand(6, generator=g), torch.randn(6, 4, generator=g), torch.randn(4)
    want = [float(acts[f]) * sum(float(W_dec[f, i] * u[i]) for i in range(4)) for f in range(6)]
    assert lookups.direct_effects(acts, W_dec, u).tolist() == pytest.approx(want, rel=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(lookups.SAE not in shipped(), reason="no shipped dictionary")
def test_quick_run_prints_both_claims(tmp_path):
    out = tmp_path / "lookups.png"
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments/feature_lookups.py"), "--quick", "--out",
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"capital: .* -> ' Paris'", done.stdout)
    assert len(re.findall(r"^claim \((capital|needle)\): (held|not held)$", done.stdout, re.M)) == 2
    assert out.read_bytes()[:4] == b"\x89PNG"
