"""Nemotron-H (Mamba2 + attention + MoE, one sub-block per layer) traced with generation on a
tiny random checkpoint, against transformers' own modules."""

from __future__ import annotations

import torch

import interp
from interp.trace.routers import routers

IDS = torch.tensor([3, 17, 42, 8, 99, 23, 5, 61])


def test_layer_kinds_come_from_the_config(tiny_nemotron_h):
    facts = interp.trace(tiny_nemotron_h, IDS).facts
    assert facts.layer_kinds == [("mamba2",), ("moe",), ("attention",), ("mamba2",), ("mlp",)]
    assert facts.moe_layers == [1] and facts.router == "sigmoid_group" and facts.n_shared == 1
    assert facts.n_streams == 1


def test_logits_with_generation_equal_the_model(tiny_nemotron_h):
    trace = interp.trace(tiny_nemotron_h, IDS, max_new_tokens=3)
    record = trace.records[0]
    hf = tiny_nemotron_h.original_model
    full = hf(record.ids[None]).logits[0, len(IDS) - 1 :].float()
    error = (record.query_logits - full).abs().max().item()
    print(f"\nNemotron-H: max |logit - HF logit| over prompt end + 3 steps {error:.1e}")
    assert error <= 1e-4


def test_each_layer_writes_under_its_kinds_stage(tiny_nemotron_h):
    trace = interp.trace(tiny_nemotron_h, IDS, max_new_tokens=2)
    t = trace.records[0].tensors
    resid = t["resid"]
    writes = t["attn_out"] + t["mlp_out"] + t["mamba_out"]
    assert torch.allclose(resid[:-1] + writes, resid[1:], atol=1e-6)
    # Each layer writes through its one sub-block only.
    for layer, stage in enumerate(["mamba_out", "mlp_out", "attn_out", "mamba_out", "mlp_out"]):
        for other in {"attn_out", "mlp_out", "mamba_out"} - {stage}:
            assert not t[other][layer].any()
        assert t[stage][layer].norm() > 0
    stages = trace.residual.groupby("layer").stage.unique().map(list).to_dict()
    assert stages[0] == ["resid_pre", "mamba_out", "resid_post"]
    assert stages[2] == ["resid_pre", "attn_out", "resid_post"]
    assert stages[1] == ["resid_pre", "mlp_out", "resid_post"]


def test_routing_equals_nemotrons_own_router(tiny_nemotron_h):
    seen = {}
    router = routers(tiny_nemotron_h)[1]

    def keep(module, args, out) -> None:
        seen.setdefault("x", args[0].detach().reshape(-1, 32))

    handle = router.module.register_forward_hook(keep)
    trace = interp.trace(tiny_nemotron_h, IDS, capture=["routing"])
    handle.remove()
    _, weights, experts = router.module(seen["x"])  # transformers' NemotronHTopkRouter
    order = experts.sort(-1)
    mine = trace.tensor("router_experts", 0)[0].sort(-1)
    assert torch.equal(mine.values, order.values)
    mine_w = trace.tensor("router_weights", 0)[0].gather(-1, mine.indices)
    error = (mine_w - weights.gather(-1, order.indices)).abs().max().item()
    print(f"\nNemotron-H: max |routing weight - HF router weight| {error:.1e}")
    assert error <= 1e-6
    shared = trace.routing.query("shared")
    assert len(shared) == len(IDS) and (shared.weight == 1).all()


def test_ssm_hooks_captured_by_name(tiny_nemotron_h):
    # TL's SSM2 hooks that fire on transformers' torch path (hook_conv, hook_ssm_state and
    # hook_ssm_write are named by the bridge but do not fire there).
    names = ["blocks.0.mixer.hook_ssm_out", "blocks.3.mixer.hook_in_proj"]
    trace = interp.trace(tiny_nemotron_h, IDS, capture=names, max_new_tokens=2)
    for name in names:
        assert trace.tensor(name, 0).shape[0] == len(IDS) + 2


def test_attention_layer_pattern_equals_the_models_and_journey_shows_kinds(tiny_nemotron_h):
    from interp.analysis.journey import format_journey, journey

    trace = interp.trace(tiny_nemotron_h, IDS, max_new_tokens=2, query_positions="all")
    record = trace.records[0]
    out = tiny_nemotron_h.original_model(record.ids[None], output_attentions=True)
    theirs = [a[0] for a in out.attentions if a is not None and a.shape[-1] == len(record.ids)]
    mine = record.tensors["patterns"]  # [layer head query key], generated rows included
    assert any(torch.allclose(mine[2], a, atol=1e-6) for a in theirs)
    assert not mine[[0, 1, 3, 4]].any()  # Mamba, MoE and MLP layers have no pattern
    frame = journey(trace)
    assert list(frame.kind[:5]) == ["mamba2", "moe", "attention", "mamba2", "mlp"]
    assert (frame.sources[:5].astype(bool) == [False, False, True, False, False]).all()
    mamba = trace.tensor("mamba_out", 0)[:, len(IDS) - 1].norm(dim=-1)
    assert frame.mamba_write[:5].tolist() == mamba.tolist()
    text = format_journey(frame)
    assert "kind" in text and "|mamba|" in text
    for kind in ("attention", "lens", "routing", "journey"):
        trace.show(kind)


def test_report_shows_memory_per_kind(tiny_nemotron_h, tmp_path):
    from interp.report import build_report

    trace = interp.trace(tiny_nemotron_h, IDS, max_new_tokens=3)
    html = build_report(trace, tmp_path / "r.html", model=tiny_nemotron_h, progress=False)
    assert "memory per kind" in html.read_text()
