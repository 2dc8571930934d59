"""Feature ablation and steering hooks, and the dictionary metrics, against independent
computations: numpy formulas and transformers' own model with its own hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_llama
from feature_files import HOOK, np_encode, weights, write_saelens

import interp
from interp.errors import InterpError
from interp.features import load, metrics
from interp.runs.features import ablate_features, dictionary_metrics, steer_features


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return random_llama(tmp_path_factory, n_layers=2)


@pytest.fixture(scope="module")
def llama(llama_path):
    return interp.load(str(llama_path))


@pytest.fixture(scope="module")
def sae(tmp_path_factory):
    w = {n: t * 4 if n == "W_enc" else t for n, t in weights(d_sae=64).items()}
    return load(write_saelens(tmp_path_factory.mktemp("sae") / "res1", "standard", w)), w


def _ids(*lengths):
    g = torch.Generator().manual_seed(4)
    return [torch.randint(3, 101, (n,), generator=g) for n in lengths]


def test_reconstruction_metrics_match_numpy():
    g = np.random.default_rng(0)
    x = g.normal(size=(50, 16))
    recon = x + g.normal(scale=0.3, size=x.shape)
    acts = np.where(g.random((50, 40)) < 0.1, g.random((50, 40)), 0.0)
    xt, rt = torch.tensor(x), torch.tensor(recon)
    per_dim_var = np.var(x, axis=0)  # population variance of each dimension over tokens
    ev = 1 - ((x - recon) ** 2).sum() / (len(x) * per_dim_var.sum())
    assert metrics.explained_variance(xt, rt) == pytest.approx(ev, rel=1e-9)
    assert metrics.mse(xt, rt) == pytest.approx(np.mean((x - recon) ** 2), rel=1e-9)
    cos = [a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(x, recon)]
    assert metrics.cosine(xt, rt) == pytest.approx(np.mean(cos), rel=1e-9)
    assert metrics.l0(torch.tensor(acts)) == pytest.approx(np.count_nonzero(acts) / 50)
    assert metrics.loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)


def test_ablation_and_steering_match_hand_hooks_on_one_forward_and_generation(llama, sae):
    dictionary, w = sae
    W = {n: t.double().numpy() for n, t in w.items()}
    ids = _ids(7)
    acts = np_encode(interp.trace(llama, ids, capture=[HOOK]).tensor(HOOK).numpy(), w, "standard")
    feature = int(np.argmax(acts[-1]))  # the top feature at the last position

    def ablated(x, hook):  # x - a_f * W_dec[f], a_f encoded by hand at each position
        a = np_encode(x[0].float().numpy(), w, "standard")[:, feature]
        return x - torch.from_numpy(a[:, None] * W["W_dec"][feature])[None].to(x.dtype)

    def steered(x, hook):
        return x + torch.from_numpy(5.0 * W["W_dec"][feature]).to(x.dtype)

    for hooks, by_hand in ((ablate_features(dictionary, [feature]), ablated),
                           (steer_features(dictionary, {feature: 5.0}), steered)):  # fmt: skip
        ours = interp.trace(llama, ids, capture=[], fwd_hooks=hooks, max_new_tokens=4)
        hand = interp.trace(llama, ids, capture=[], fwd_hooks=[(HOOK, by_hand)], max_new_tokens=4)
        clean = interp.trace(llama, ids, capture=[], max_new_tokens=4)
        assert ours.records[0].ids.tolist() == hand.records[0].ids.tolist()
        torch.testing.assert_close(ours.records[0].logprob[1:], hand.records[0].logprob[1:],
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
        assert (ours.records[0].query_logits - clean.records[0].query_logits).abs().max() > 1e-3


def test_bad_edits_get_one_line(sae):
    dictionary, _ = sae
    with pytest.raises(InterpError, match=r"feature 64 is not in \[0, 64\)"):
        ablate_features(dictionary, [64])
    with pytest.raises(InterpError, match="must be a number"):
        steer_features(dictionary, {3: "big"})


def _replacing(replace):
    """A forward pre-hook that replaces a decoder layer's hidden_states, however passed."""

    def pre(module, args, kwargs):
        if args:
            return (replace(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

    return pre


def test_cross_entropies_match_transformers(llama, llama_path, sae):
    """Clean, spliced and zero-ablated losses recomputed on transformers' own model, with a
    forward pre-hook on decoder layer 1 (its input is blocks.1.hook_resid_pre)."""
    from transformers import AutoModelForCausalLM

    dictionary, w = sae
    hf = AutoModelForCausalLM.from_pretrained(llama_path).eval()
    prompts = _ids(9, 5)
    got = dictionary_metrics(llama, dictionary, prompts, batch_size=1)

    def loss(replace=None, prompts=prompts):
        nll, n = 0.0, 0
        for ids in prompts:
            handle = None
            if replace is not None:
                handle = hf.model.layers[1].register_forward_pre_hook(
                    _replacing(replace), with_kwargs=True
                )
            try:
                logits = hf(ids[None]).logits[0].double()
            finally:
                if handle is not None:
                    handle.remove()
            nll += float(torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="sum"))
            n += len(ids) - 1
        return nll / n

    def splice(h):
        a = np_encode(h[0].numpy(), w, "standard")
        recon = a @ w["W_dec"].double().numpy() + w["b_dec"].double().numpy()
        return torch.from_numpy(recon)[None].float()

    def loss_of(ids):
        return loss(prompts=ids)

    expected = {"ce_clean": loss(), "ce_spliced": loss(splice), "ce_zero": loss(torch.zeros_like)}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-4), key
    recovered = (expected["ce_zero"] - expected["ce_spliced"]) / (
        expected["ce_zero"] - expected["ce_clean"]
    )
    assert got["loss_recovered"] == pytest.approx(recovered, rel=1e-3)
    assert got["tokens"] == 14 and 0 < got["l0"] <= 64
    same = dictionary_metrics(llama, dictionary, torch.stack([prompts[0], prompts[0]]))
    assert same["ce_clean"] == pytest.approx(loss_of([prompts[0]]), rel=1e-4)
