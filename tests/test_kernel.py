"""A trace runs the model's default attention kernel (SDPA) unless a hook needs eager."""

from __future__ import annotations

import pytest
import torch
from conftest import random_llama
from transformers import AutoModelForCausalLM

import interp


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return random_llama(tmp_path_factory, n_layers=3)


@pytest.fixture(scope="module")
def llama(llama_dir):
    return interp.load(str(llama_dir))


def _kernels(model, **kwargs) -> tuple[set[str], interp.Trace]:
    """The kernels the HF attention modules were asked for during a trace's forwards."""
    seen = set()
    config = model.original_model.config
    watch = ("blocks.1.hook_resid_pre", lambda t, hook: seen.add(config._attn_implementation))
    ids = torch.tensor([5, 17, 33, 2, 90, 41, 7])
    trace = interp.trace(model, ids, fwd_hooks=[watch], **kwargs)
    return seen, trace


def test_residual_capture_runs_sdpa_and_matches_transformers_sdpa(llama, llama_dir):
    seen, trace = _kernels(llama, capture=["residual"])
    assert seen == {"sdpa"}
    reference = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="sdpa")
    ids = trace.records[0].ids[None]
    with torch.no_grad():
        hidden = reference(ids, output_hidden_states=True).hidden_states
    resid = trace.tensor("resid", 0)  # [layer+1 pos d]; HF's last hidden state is normed
    for layer in range(3):
        assert (resid[layer] - hidden[layer][0]).abs().max() <= 1e-5
    # Put back: the next forward is TL's eager reimplementation again.
    assert llama.original_model.config._attn_implementation == "eager"
    assert all("forward" not in vars(block.attn) for block in llama.blocks)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capture": ["attention"]},
        {"capture": ["shapes"]},  # lists every hook of block 0, hook_pattern too
        {"capture": ["residual", "blocks.2.attn.hook_rot_q"]},
        {"capture": ["residual"], "max_new_tokens": 2, "fwd_hooks_extra": "hook_attn_scores"},
    ],
)
def test_eager_whenever_a_hook_reads_what_only_eager_makes(llama, kwargs):
    kwargs = dict(kwargs)
    extra = kwargs.pop("fwd_hooks_extra", None)
    if extra:
        llama.add_hook(f"blocks.0.attn.{extra}", lambda t, hook: None)  # left on the model
    try:
        seen, _ = _kernels(llama, **kwargs)
    finally:
        llama.reset_hooks()
    assert seen == {"eager"}


def test_generation_on_sdpa_equals_the_eager_full_forward(llama):
    _, gen = _kernels(llama, capture=["residual"], max_new_tokens=5)
    full = interp.trace(llama, gen.records[0].ids, capture=["residual", "attention"])
    assert (gen.tensor("resid", 0) - full.tensor("resid", 0)).abs().max() <= 1e-5
    assert (gen.tensor("z", 0) - full.tensor("z", 0)).abs().max() <= 1e-5


def test_a_plain_forward_is_sdpa_and_a_copy_runs_its_own(llama, llama_dir):
    import copy

    reference = AutoModelForCausalLM.from_pretrained(llama_dir, attn_implementation="sdpa")
    ids = torch.tensor([[5, 17, 33, 2, 90]])
    with torch.no_grad():
        want = reference(ids).logits
        assert (llama(ids) - want).abs().max() <= 1e-5
        other = copy.deepcopy(llama)
        other.original_model.lm_head.weight.zero_()
        assert other(ids).abs().max() == 0 and (llama(ids) - want).abs().max() <= 1e-5
