"""experiments/train_sae.py: the TopK recipe on synthetic sparse data (fast), its saved files
read back by interp.features, and the shipped dictionary's metrics recomputed in plain torch
(slow: smollm2)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import interp
from interp.features import metrics
from interp.features.load import shipped

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("train_sae", ROOT / "experiments/train_sae.py")
train_sae = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(train_sae)


def plain_topk(x, w, k):
    """SAELens's TopK forward written out, independent of interp.features."""
    pre = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    top = pre.topk(k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    return acts, acts @ w["W_dec"] + w["b_dec"]


@pytest.fixture(scope="module")
def synthetic():
    """x = sparse codes (4 of 64 ground-truth unit directions in 16 dims) + an offset."""
    g = torch.Generator().manual_seed(0)
    truth = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    codes = torch.zeros(4096, 64)
    idx = torch.stack([torch.randperm(64, generator=g)[:4] for _ in range(4096)])
    codes.scatter_(1, idx, torch.rand(4096, 4, generator=g) * 3 + 1)
    return codes @ truth + 5.0


def test_training_learns_a_sparse_code_and_keeps_decoder_rows_unit(synthetic):
    weights, curve = train_sae.train(synthetic, 128, 4, 300, seed=1, batch=256, lr=3e-3,
                                     log=lambda s: None)  # fmt: skip
    assert curve[0]["fvu"] > 0.5 and curve[-1]["fvu"] < 0.3 * curve[0]["fvu"]
    assert torch.allclose(weights["W_dec"].norm(dim=1), torch.ones(128), atol=1e-5)
    acts, recon = plain_topk(synthetic, weights, 4)
    assert ((acts > 0).sum(1) <= 4).all()
    assert metrics.explained_variance(synthetic, recon) > 0.7
    again, _ = train_sae.train(synthetic, 128, 4, 300, seed=1, batch=256, lr=3e-3,
                               log=lambda s: None)  # fmt: skip
    assert all(torch.equal(weights[n], again[n]) for n in weights)  # seeded: reproducible


def test_saved_dictionary_loads_and_encodes_as_plain_torch(synthetic, tmp_path):
    weights, _ = train_sae.train(synthetic, 128, 4, 20, seed=2, batch=256, log=lambda s: None)
    train_sae.save(weights, tmp_path / "sae", 4, {"note": "test"})
    sae = interp.features.load(tmp_path / "sae")
    assert (sae.architecture, sae.k, sae.hook_in, sae.d_sae) == ("topk", 4, train_sae.HOOK, 128)
    acts, recon = sae.forward(synthetic[:200])
    want_acts, want_recon = plain_topk(synthetic[:200], weights, 4)
    assert torch.allclose(acts, want_acts, atol=1e-5)
    assert torch.allclose(recon, want_recon, atol=1e-4)
    assert json.loads((tmp_path / "sae/training_log.json").read_text()) == {"note": "test"}


SHIPPED = "smollm2-135m-res-topk"


@pytest.mark.skipif(SHIPPED not in shipped(), reason="none")
def test_shipped_dictionary_loads_by_name():
    sae = interp.features.load(SHIPPED)
    assert (sae.architecture, sae.k, sae.hook_in, sae.d_in) == ("topk", 32, train_sae.HOOK, 576)
    log = json.loads((train_sae.SHIPPED / "training_log.json").read_text())
    assert log["held_out"]["l0"] == pytest.approx(32, abs=0.5)


@pytest.mark.slow
@pytest.mark.skipif(SHIPPED not in shipped(), reason="none")
def test_shipped_metrics_match_plain_torch(smollm):
    """dictionary_metrics on two held-out windows against a hand-written computation: the
    activations from a hook, the SAE forward, CE of clean / spliced / zeroed runs."""
    from interp.runs.features import dictionary_metrics

    sae = interp.features.load(SHIPPED)
    w = {n: getattr(sae, n) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    tokens = train_sae.windows(smollm.tokenizer, train_sae.held_out(), 2, seed=5)
    got = dictionary_metrics(smollm, sae, tokens)

    def ce(hook_fn):
        with torch.no_grad(), smollm.hooks(fwd_hooks=[(train_sae.HOOK, hook_fn)]):
            logits = smollm(tokens).float()
        return float(torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)))  # fmt: skip

    seen = []

    def keep(x, hook):
        seen.append(x.detach().float().reshape(-1, x.shape[-1]))

    clean = ce(keep)
    x = seen[0]
    acts, recon = plain_topk(x, w, 32)
    spliced = ce(lambda t, hook: plain_topk(t.float(), w, 32)[1].to(t.dtype))
    zero = ce(lambda t, hook: torch.zeros_like(t))
    assert got["l0"] == pytest.approx(float((acts > 0).sum(1).float().mean()), abs=1e-6)
    resid = (x - recon).pow(2).sum()
    ev = 1 - resid / (x - x.mean(0)).pow(2).sum()
    assert got["explained_variance"] == pytest.approx(float(ev), abs=1e-3)
    assert got["mse"] == pytest.approx(float(resid / x.numel()), rel=1e-3)
    assert got["ce_clean"] == pytest.approx(clean, abs=1e-3)
    assert got["ce_spliced"] == pytest.approx(spliced, abs=1e-2)
    assert got["ce_zero"] == pytest.approx(zero, abs=1e-3)
    assert got["loss_recovered"] == pytest.approx((zero - spliced) / (zero - clean), abs=1e-2)


@pytest.mark.slow
def test_quick_run_saves_a_loadable_dictionary(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments/train_sae.py"), "--quick", "--out",
         str(tmp_path / "q")], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sae = interp.features.load(tmp_path / "q")
    assert (sae.k, sae.d_sae) == (32, 256)
    assert "loss_recovered: " in done.stdout
