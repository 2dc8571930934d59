"""Dictionaries written to disk in each format, encoded here and by hand (numpy formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_files import D_IN, D_SAE, HOOK, np_encode, weights, write_saelens

from interp.errors import InterpError
from interp.features import load


@pytest.fixture(scope="module")
def x():
    return torch.randn(7, D_IN, generator=torch.Generator().manual_seed(3)) * 2


@pytest.mark.parametrize("arch,k", [("standard", None), ("jumprelu", None), ("topk", 5)])
@pytest.mark.parametrize("meta_style", ["v6", "v5"])
def test_saelens_encodings_match_hand_computation(tmp_path, x, arch, k, meta_style):
    w = weights()
    cfg = {"k": k} if k else {}
    sae = load(write_saelens(tmp_path / arch, arch, w, meta_style, **cfg))
    assert (sae.hook_in, sae.hook_out, sae.layer, sae.d_sae) == (HOOK, HOOK, 1, D_SAE)
    acts, recon = sae.forward(x)
    expected = np_encode(x, w, arch, k)
    np.testing.assert_allclose(acts.numpy(), expected, atol=1e-5)
    dec = expected @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
    np.testing.assert_allclose(recon.numpy(), dec, atol=1e-5)
    if arch == "topk":
        assert ((acts != 0).sum(-1) <= k).all()


def test_normalisation_and_no_b_dec_on_input(tmp_path, x):
    w = weights()
    for norm in ("constant_norm_rescale", "layer_norm"):
        sae = load(write_saelens(tmp_path / norm, "standard", w, normalize_activations=norm,
                                 apply_b_dec_to_input=False))  # fmt: skip
        acts, recon = sae.forward(x)
        expected = np_encode(x, w, "standard", b_dec_in=False, norm=norm)
        np.testing.assert_allclose(acts.numpy(), expected, atol=1e-5)
        out = expected @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
        xd = x.double().numpy()
        if norm == "constant_norm_rescale":  # undone: the output is back at the input's scale
            out = out / (np.sqrt(D_IN) / np.linalg.norm(xd, axis=-1, keepdims=True))
        else:
            mu = xd.mean(-1, keepdims=True)
            out = out * (xd - mu).std(-1, ddof=1, keepdims=True) + mu
        np.testing.assert_allclose(recon.numpy(), out, atol=1e-4)


def test_jumprelu_saved_with_log_threshold(tmp_path, x):
    w = weights()
    saved = {n: t for n, t in w.items() if n != "threshold"}
    saved["log_threshold"] = w["threshold"].log()
    sae = load(write_saelens(tmp_path / "log", "jumprelu", saved))
    np.testing.assert_allclose(sae.encode(x).numpy(), np_encode(x, w, "jumprelu"), atol=1e-5)


def test_batchtopk_with_and_without_threshold(tmp_path, x):
    w = weights()
    w["threshold"] = torch.full((D_SAE,), 0.2)
    sae = load(write_saelens(tmp_path / "thr", "batchtopk", w, k=4))
    np.testing.assert_allclose(sae.encode(x).numpy(), np_encode(x, w, "jumprelu"), atol=1e-5)
    del w["threshold"]
    sae = load(write_saelens(tmp_path / "batch", "batchtopk", w, k=4))
    acts = sae.encode(x).numpy()
    relu = np.maximum(np_encode(x, w, "standard"), 0).ravel()
    keep = np.sort(relu)[::-1][: 4 * len(x)]  # the 4 * tokens largest over the whole batch
    np.testing.assert_allclose(np.sort(acts.ravel())[::-1][: 4 * len(x)], keep, atol=1e-5)
    assert (acts != 0).sum() == (keep > 0).sum()


def test_topk_rescaled_by_decoder_norm(tmp_path, x):
    w = weights()
    sae = load(write_saelens(tmp_path / "r", "topk", w, k=6, rescale_acts_by_decoder_norm=True))
    norms = np.linalg.norm(w["W_dec"].double().numpy(), axis=-1)
    pre = (x.double().numpy() - w["b_dec"].double().numpy()) @ w["W_enc"].double().numpy()
    pre = (pre + w["b_enc"].double().numpy()) * norms
    expected = np.zeros_like(pre)
    for row in range(len(pre)):
        top = np.argsort(-pre[row])[:6]
        expected[row, top] = np.maximum(pre[row, top], 0)
    acts, recon = sae.forward(x)
    np.testing.assert_allclose(acts.numpy(), expected, atol=1e-5)
    dec = (expected / norms) @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
    np.testing.assert_allclose(recon.numpy(), dec, atol=1e-5)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_transcoder"])
def test_transcoders(tmp_path, x, arch):
    w = weights(d_out=24)
    if arch == "skip_transcoder":
        w["W_skip"] = torch.randn(24, D_IN, generator=torch.Generator().manual_seed(9)) * 0.1
    tc = load(write_saelens(tmp_path / arch, arch, w, hook_name="blocks.0.ln2.hook_normalized",
                            hook_name_out="blocks.0.hook_mlp_out", d_out=24))  # fmt: skip
    assert tc.transcoder and tc.hook_out == "blocks.0.hook_mlp_out" and tc.layer == 0
    acts, out = tc.forward(x)
    base = "jumprelu" if arch.startswith("jumprelu") else "standard"
    expected = np_encode(x, w, base, b_dec_in=False)  # b_dec lives at the output
    np.testing.assert_allclose(acts.numpy(), expected, atol=1e-5)
    dec = expected @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
    if "W_skip" in w:
        dec = dec + x.double().numpy() @ w["W_skip"].double().numpy().T
    np.testing.assert_allclose(out.numpy(), dec, atol=1e-5)


def test_gemma_scope_npz(tmp_path, x):
    w = weights()
    (tmp_path / "layer_1" / "width_48").mkdir(parents=True)
    path = tmp_path / "layer_1" / "width_48" / "params.npz"
    np.savez(path, **{n: t.numpy() for n, t in w.items()})
    with pytest.raises(InterpError, match="names no hook"):
        load(path)
    sae = load(path.parent, hook=HOOK)
    assert sae.architecture == "jumprelu" and not sae.apply_b_dec_to_input
    expected = np_encode(x, w, "jumprelu", b_dec_in=False)
    np.testing.assert_allclose(sae.encode(x).numpy(), expected, atol=1e-5)


def test_shipped_names_resolve(tmp_path, monkeypatch, x):
    import importlib

    load_mod = importlib.import_module("interp.features.load")  # the module, not the function

    monkeypatch.setattr(load_mod, "SHIPPED", tmp_path)
    w = weights()
    write_saelens(tmp_path / "res-demo", "standard", w)
    assert load_mod.shipped() == ["res-demo"]
    np.testing.assert_allclose(load("res-demo").encode(x).numpy(), np_encode(x, w, "standard"),
                               atol=1e-5)  # fmt: skip
    with pytest.raises(
        InterpError, match=r"no dictionary at nope \(shipped dictionaries: res-demo"
    ):
        load("nope")


def test_bad_files_get_one_line(tmp_path):
    w = weights()
    with pytest.raises(InterpError, match="no dictionary at"):
        load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InterpError, match="holds no dictionary"):
        load(tmp_path / "empty")
    bad = write_saelens(tmp_path / "bad", "standard", {**w, "b_enc": torch.zeros(3)})
    with pytest.raises(InterpError, match=r"b_enc has shape \[3\], expected \[48\]"):
        load(bad)
    with pytest.raises(InterpError, match="needs k"):
        load(write_saelens(tmp_path / "k", "topk", w))
    with pytest.raises(InterpError, match="architecture 'gated'"):
        load(write_saelens(tmp_path / "g", "gated", w))
    (tmp_path / "bad" / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InterpError, match="cannot read"):
        load(tmp_path / "bad")
    (tmp_path / "bad" / "cfg.json").write_text("{")
    with pytest.raises(InterpError, match="cannot read"):
        load(tmp_path / "bad")
