"""Dictionaries attached to a trace (tiny random Llama): captured features, errors, splicing,
generation and mismatches, each against the hooked activation encoded by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from feature_files import HOOK, np_encode, weights, write_saelens

import interp
from interp.errors import InterpError
from interp.features import load


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=101,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return interp.load(str(path))


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    w = {n: t * 4 if n == "W_enc" else t for n, t in weights(d_sae=64).items()}
    return load(write_saelens(tmp_path_factory.mktemp("sae") / "res1", "standard", w)), w


def _ids(*lengths):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, 101, (n,), generator=g) for n in lengths]


def test_features_frame_is_the_top_k_of_the_hand_encoding(llama, sae):
    dictionary, w = sae
    ids = _ids(9, 6)  # two prompts padded into one batch
    trace = interp.trace(llama, ids, capture=[HOOK], features=[dictionary], feature_top_k=4)
    frame, errors = trace.features, trace.feature_error
    assert list(frame.columns) == ["prompt", "pos", "token", "layer", "hook", "dictionary",
                                   "feature", "activation"]  # fmt: skip
    assert set(frame.layer) == {1} and set(frame.hook) == {HOOK}
    for p, seq in enumerate(ids):
        x = trace.tensor(HOOK, p).numpy()
        acts = np_encode(x, w, "standard")
        for pos in range(len(seq)):
            rows = frame[(frame.prompt == p) & (frame.pos == pos)]
            top = np.argsort(-acts[pos])[:4]
            top = top[acts[pos, top] > 0]
            assert list(rows.feature) == list(top)
            np.testing.assert_allclose(rows.activation, acts[pos, top], rtol=1e-4, atol=1e-5)
        recon = acts @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
        e = errors[errors.prompt == p]
        np.testing.assert_allclose(e.error, np.linalg.norm(x - recon, axis=-1), rtol=1e-4)
        np.testing.assert_allclose(e.norm, np.linalg.norm(x, axis=-1), rtol=1e-5)
        assert list(e.l0) == list((acts > 0).sum(-1))


def test_splice_feeds_the_reconstruction_downstream(llama, sae):
    dictionary, w = sae
    ids = _ids(8)
    W = {n: t.double() for n, t in w.items()}

    def by_hand(x, hook):  # the reconstruction, by the numpy formula
        acts = np.maximum((x[0].double().numpy() - W["b_dec"].numpy()) @ W["W_enc"].numpy()
                          + W["b_enc"].numpy(), 0)  # fmt: skip
        recon = acts @ W["W_dec"].numpy() + W["b_dec"].numpy()
        return torch.from_numpy(recon)[None].to(x.dtype)

    clean = interp.trace(llama, ids, capture=[])
    spliced = interp.trace(llama, ids, capture=[], features=[dictionary], splice=True)
    manual = interp.trace(llama, ids, capture=[], fwd_hooks=[(HOOK, by_hand)])
    kept = interp.trace(llama, ids, capture=[], features=[dictionary], splice=True,
                        error_term=True)  # fmt: skip
    lp = {
        name: t.records[0].logprob[1:]
        for name, t in [("clean", clean), ("spliced", spliced), ("manual", manual), ("kept", kept)]
    }
    torch.testing.assert_close(lp["spliced"], lp["manual"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lp["kept"], lp["clean"], atol=1e-5, rtol=1e-5)
    assert (lp["spliced"] - lp["clean"]).abs().max() > 1e-3  # the splice changed the run


def test_generation_captures_each_new_token(llama, sae):
    dictionary, w = sae
    trace = interp.trace(llama, _ids(5, 3), max_new_tokens=3, capture=[HOOK],
                         features=[dictionary], feature_top_k=None)  # fmt: skip
    for p, n in enumerate((8, 6)):  # each prompt's own positions, prompt then generated
        x = trace.tensor(HOOK, p).numpy()
        assert len(x) == n
        acts = np_encode(x, w, "standard")
        frame = trace.features[trace.features.prompt == p]
        assert sorted(set(frame.pos)) == list(range(n))
        for pos in range(n):
            rows = frame[frame.pos == pos]
            assert set(rows.feature) == set(np.nonzero(acts[pos] > 1e-6)[0])
            np.testing.assert_allclose(sorted(rows.activation), sorted(acts[pos][acts[pos] > 1e-6]),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip


def test_mismatched_dictionaries_get_one_line(llama, tmp_path):
    wide = load(write_saelens(tmp_path / "wide", "standard", weights(d_in=40)))
    with pytest.raises(InterpError, match=r"width 40 at blocks.1.hook_resid_pre.*width 32"):
        interp.trace(llama, _ids(4), features=[wide])
    deep = load(write_saelens(tmp_path / "deep", "standard", weights(),
                              hook_name="blocks.9.hook_resid_pre"))  # fmt: skip
    with pytest.raises(InterpError, match="reads blocks.9.hook_resid_pre, which model"):
        interp.trace(llama, _ids(4), features=[deep])
    with pytest.raises(InterpError, match="need features="):
        interp.trace(llama, _ids(4), splice=True)


def test_transcoder_attaches_and_saved_trace_keeps_frames(llama, tmp_path):
    w = weights(d_out=32)
    tc = load(write_saelens(tmp_path / "tc", "skip_transcoder", {**w, "W_skip": torch.eye(32)},
                            hook_name="blocks.0.ln2.hook_normalized",
                            hook_name_out="blocks.0.hook_mlp_out"))  # fmt: skip
    ids = _ids(6)
    trace = interp.trace(
        llama, ids, capture=["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"], features=[tc]
    )
    x = trace.tensor("blocks.0.ln2.hook_normalized").numpy()
    out = trace.tensor("blocks.0.hook_mlp_out").numpy()
    acts = np_encode(x, w, "standard", b_dec_in=False)
    recon = acts @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy() + x
    np.testing.assert_allclose(trace.feature_error.error, np.linalg.norm(out - recon, axis=-1),
                               rtol=1e-4)  # fmt: skip
    saved = interp.Trace.load(trace.save(tmp_path / "saved"))
    assert saved.features.equals(trace.features)


def test_hook_z_dictionary_reads_the_heads_flattened(llama, tmp_path):
    z = "blocks.0.attn.hook_z"  # [B T H d_head] = [.. 4 8]: d_in 32
    w = weights(d_sae=40)
    sae = load(write_saelens(tmp_path / "z", "standard", w, hook_name=z))
    ids = _ids(6)
    trace = interp.trace(llama, ids, capture=[z], features=[sae], feature_top_k=None)
    x = trace.tensor(z).reshape(6, -1).numpy()
    acts = np_encode(x, w, "standard")
    rows = trace.features
    assert len(rows) == int((acts > 0).sum())
    np.testing.assert_allclose(rows.sort_values(["pos", "feature"]).activation,
                               acts[acts > 0], rtol=1e-4)  # fmt: skip
    kept = interp.trace(llama, ids, capture=[], features=[sae], splice=True, error_term=True)
    clean = interp.trace(llama, ids, capture=[])
    torch.testing.assert_close(kept.records[0].logprob[1:], clean.records[0].logprob[1:])


def test_bad_top_k_is_one_line(llama, sae):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InterpError, match="feature_top_k must be a positive integer"):
            interp.trace(llama, _ids(3), features=[sae[0]], feature_top_k=bad)


@pytest.mark.slow
def test_smollm2_dictionary_attaches_and_splices(smollm, tmp_path):
    """A random dictionary at the width of SmolLM2's residual stream (576): it attaches, its
    error term restores the clean run exactly, and a mismatched layer is refused."""
    hook = "blocks.15.hook_resid_post"
    w = weights(d_in=576, d_sae=1024)
    sae = load(write_saelens(tmp_path / "s", "topk", w, k=16, hook_name=hook))
    prompt = "The capital of France is"
    trace = interp.trace(smollm, prompt, capture=[hook], features=[sae], splice=True,
                         error_term=True)  # fmt: skip
    clean = interp.trace(smollm, prompt, capture=[])
    torch.testing.assert_close(trace.records[0].logprob[1:], clean.records[0].logprob[1:])
    assert (trace.feature_error.l0 == 16).all()
    x = trace.tensor(hook).numpy()
    top = np.argsort(-np_encode(x[-1:], w, "topk", k=16)[0])[:10]
    assert trace.features.query(f"pos == {len(x) - 1}").feature.tolist() == list(top)
    deep = load(write_saelens(tmp_path / "d", "topk", w, k=16,
                              hook_name="blocks.30.hook_resid_post"))  # fmt: skip
    with pytest.raises(InterpError, match="blocks.30.hook_resid_post, which model"):
        interp.trace(smollm, prompt, features=[deep])


def test_transcoder_reading_after_it_writes_is_one_line(llama, tmp_path):
    backwards = load(write_saelens(tmp_path / "b", "transcoder", weights(),
                                   hook_name="blocks.1.hook_resid_pre",
                                   hook_name_out="blocks.0.hook_mlp_out"))  # fmt: skip
    with pytest.raises(InterpError, match="reads blocks.1.hook_resid_pre, which this model runs"):
        interp.trace(llama, _ids(4), features=[backwards])
