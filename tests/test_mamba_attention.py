"""A Mamba2 layer's effective attention (interp.analysis.mamba): the mixer's output rebuilt as
out_proj(norm(α x + D x, z)) equals transformers' NemotronHMamba2Mixer run on the layer's
input, on a tiny random Nemotron-H and on the trained tiny-hybrid (float32)."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analysis.mamba import alpha, effective_attention, mixer, ssm_captures, ssm_inputs
from interp.errors import InterpError

IDS = torch.tensor([3, 17, 42, 8, 99, 23, 5, 61, 7, 11, 13])  # 11 tokens: over one chunk of 8


def _rebuild_errors(model, ids, max_new_tokens: int) -> list[float]:
    """Per Mamba2 layer, |rebuilt - mixer| / |mixer| with the mixer's D, then with D = 0 (so
    that the scan's part, small beside D x in these models, is what is compared)."""
    names = ssm_captures(model)
    inputs = [name.replace("hook_in_proj", "hook_in") for name in names]
    trace = interp.trace(model, ids, capture=names + inputs, max_new_tokens=max_new_tokens)
    errors = []
    for name, name_in in zip(names, inputs):
        layer = int(name.split(".")[1])
        module = mixer(model, layer)
        x_in = trace.tensor(name_in, 0)[None].to(module.out_proj.weight.dtype)
        s = ssm_inputs(trace.tensor(name, 0), module)
        scan = torch.einsum("hts,shp->thp", alpha(s, module), s["x"])
        skip = module.D.detach().float()[:, None] * s["x"]
        kept = module.D.detach().clone()
        for D, y in ((kept, scan + skip), (torch.zeros_like(kept), scan)):
            with torch.no_grad():
                module.D.copy_(D)
                theirs = module(x_in)[0].float()
                mine = module.out_proj(module.norm(y.reshape(len(y), -1), s["z"]))
                module.D.copy_(kept)
            errors.append(((mine - theirs).norm() / theirs.norm()).item())
        print(
            f"layer {layer}, {len(scan)} tokens: |alpha x| / |D x| = "
            f"{(scan.norm() / skip.norm()).item():.2e}; |rebuilt - mixer| / |mixer| = "
            f"{errors[-2]:.1e} (D = 0: {errors[-1]:.1e})"
        )
    return errors


@pytest.fixture(scope="module")
def loud_nemotron_h(tmp_path_factory):
    """conftest's tiny Nemotron-H with in_proj scaled up, so that α x counts beside D x
    (at the default init α x is ~1e-7 of D x; scaled by 25, ~1e-2)."""
    from conftest import nemotron_h_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    hf = AutoModelForCausalLM.from_config(nemotron_h_config())
    with torch.no_grad():
        for module in hf.modules():
            if hasattr(module, "A_log"):
                module.in_proj.weight.mul_(25)
    path = tmp_path_factory.mktemp("loud_nemotron_h")
    hf.save_pretrained(path)
    return interp.load(str(path))


def test_rebuild_equals_the_mixer_on_a_random_nemotron_h(loud_nemotron_h):
    assert max(_rebuild_errors(loud_nemotron_h, IDS, max_new_tokens=3)) <= 1e-5


def test_rebuild_equals_the_mixer_on_tiny_hybrid():
    model = interp.load("tiny-hybrid")
    ids = model.to_tokens("def add(a, b):\n    return a + b\n", prepend_bos=True)[0]
    assert max(_rebuild_errors(model, ids, max_new_tokens=2)) <= 1e-5


def test_frame_is_causal_long_form_and_matches_a_hand_recurrence(tiny_nemotron_h):
    model = tiny_nemotron_h
    trace = interp.trace(model, IDS[:5], capture=ssm_captures(model))
    frame = effective_attention(trace, model)
    assert list(frame.columns) == ["prompt", "layer", "head", "query", "key", "weight"]
    assert sorted(frame.layer.unique()) == [0, 3]
    assert (frame["key"] <= frame["query"]).all()
    assert len(frame) == 2 * 4 * (5 * 6 // 2)  # layers x heads x causal pairs
    # One entry by the recurrence's own product: α[t=3, s=1] = C_3·B_1 Δ_1 exp(A(Δ_2 + Δ_3)).
    module = mixer(model, 3)
    s = ssm_inputs(trace.tensor("blocks.3.mixer.hook_in_proj", 0), module)
    A = -torch.exp(module.A_log.detach().float())
    h = 2
    hand = (s["C"][3, h] @ s["B"][1, h]) * s["dt"][1, h] * torch.exp(A[h] * s["dt"][2:4, h].sum())
    row = frame[
        (frame.layer == 3) & (frame["head"] == h) & (frame["query"] == 3) & (frame.key == 1)
    ]
    assert row.weight.item() == pytest.approx(hand.item(), rel=1e-5)


def test_missing_capture_is_one_line(tiny_nemotron_h):
    trace = interp.trace(tiny_nemotron_h, IDS[:4])
    with pytest.raises(InterpError, match="hook_in_proj"):
        effective_attention(trace, tiny_nemotron_h)


def test_batched_prompts_give_each_prompts_own_matrix(tiny_nemotron_h):
    model, names = tiny_nemotron_h, ssm_captures(tiny_nemotron_h)
    alone = effective_attention(interp.trace(model, IDS[:4], capture=names), model)
    batch = interp.trace(model, [IDS, IDS[:4]], capture=names, max_new_tokens=1)
    frame = effective_attention(batch, model)
    assert sorted(frame.prompt.unique()) == [0, 1]
    second = frame[(frame.prompt == 1) & (frame["query"] < 4)].reset_index(drop=True)
    assert len(second) == len(alone)
    assert (second.weight - alone.weight).abs().max() <= 1e-6 * alone.weight.abs().max()
