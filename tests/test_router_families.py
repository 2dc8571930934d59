"""Every router family on a tiny random model built from its transformers config class.

(a) The block's own output, rebuilt from what the trace captured at the router (each chosen
expert's own output times its captured weight, plus the shared experts), float32, <= 1e-5.
(b) The chosen set against a hand-written loop over tokens of that family's formula, and
against the indices the Hugging Face router itself returns.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import interp
from interp.trace.routers import hf_block, routers

COMMON = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip


def _config(family: str):
    import transformers as T

    return {
        "olmoe": lambda: T.OlmoeConfig(**COMMON, intermediate_size=16, num_experts=8,
                                       num_experts_per_tok=2),
        "qwen2_moe": lambda: T.Qwen2MoeConfig(**COMMON, intermediate_size=48,
                                              moe_intermediate_size=16, num_experts=8,
                                              num_experts_per_tok=2,
                                              shared_expert_intermediate_size=24),
        "qwen3_moe": lambda: T.Qwen3MoeConfig(**COMMON, intermediate_size=48, head_dim=8,
                                              moe_intermediate_size=16, num_experts=8,
                                              num_experts_per_tok=2, norm_topk_prob=True),
        "mixtral": lambda: T.MixtralConfig(**COMMON, intermediate_size=16, num_local_experts=8,
                                           num_experts_per_tok=2),
        "gpt_oss": lambda: T.GptOssConfig(**COMMON, intermediate_size=16, head_dim=8,
                                          num_local_experts=8, num_experts_per_tok=2,
                                          layer_types=["full_attention"] * 2),
        "granitemoe": lambda: T.GraniteMoeConfig(**COMMON, intermediate_size=16,
                                                 num_local_experts=8, num_experts_per_tok=2),
        # Layer 0 dense (first_k_dense_replace), 16 experts in 4 groups, 2 groups kept, top-4.
        "deepseek_v3": lambda: T.DeepseekV3Config(
            **{**COMMON, "num_hidden_layers": 3}, intermediate_size=48, moe_intermediate_size=16,
            n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, n_group=4,
            topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
            first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
            qk_nope_head_dim=8, v_head_dim=8),
        # Mamba2, MoE (sigmoid + bias + 4 groups, 2 kept, top-4, one shared expert), attention.
        "nemotron_h": lambda: T.NemotronHConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=4, head_dim=8, max_position_embeddings=64,
            layers_block_type=["mamba", "moe", "attention"], mamba_num_heads=4,
            mamba_head_dim=8, ssm_state_size=8, n_groups=2, chunk_size=8,
            n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
            moe_intermediate_size=16, moe_shared_expert_intermediate_size=24,
            routed_scaling_factor=2.5, norm_topk_prob=True),
        "llama4": lambda: T.Llama4TextConfig(**COMMON, intermediate_size=16,
                                             intermediate_size_mlp=48, head_dim=8,
                                             num_local_experts=4, num_experts_per_tok=1,
                                             interleave_moe_layer_step=1),
    }[family]()  # fmt: skip


ARCH = {"llama4": "Llama4ForCausalLM"}
FAMILIES = ["olmoe", "qwen2_moe", "qwen3_moe", "mixtral", "gpt_oss", "granitemoe",
            "deepseek_v3", "nemotron_h", "llama4"]  # fmt: skip
GROUPED = ("deepseek_v3", "nemotron_h")  # sigmoid + e_score_correction_bias + groups


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    """(family, bridge model, its MoE blocks' inputs and outputs for ids [2, 9])."""
    from transformers import AutoModelForCausalLM

    family = request.param
    torch.manual_seed(3)
    config = _config(family)
    if family in ARCH:
        config.architectures = [ARCH[family]]
    hf = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "gate.weight" in name or "router.weight" in name:
                p.mul_(20)  # spread the router's scores so no choice is a near-tie
            if "router.bias" in name:
                p.normal_(0, 1)  # GPT-OSS: the router's bias takes part in the choice
        for module in hf.modules():
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.normal_(0, 0.3)
    path = tmp_path_factory.mktemp(family)
    hf.save_pretrained(path)
    model = interp.load(str(path))
    ids = torch.randint(3, 64, (2, 9), generator=torch.Generator().manual_seed(5))
    seen = {}
    handles = [
        r.block.register_forward_hook(
            lambda m, args, out, layer=layer: seen.__setitem__(
                layer, (args[0].detach(), (out[0] if isinstance(out, tuple) else out).detach())
            )
        )
        for layer, r in routers(model).items()
    ]
    trace = interp.trace(model, ids, capture=("routing",))
    for h in handles:
        h.remove()
    return family, model, trace, seen


def _expert_output(router, e: int, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Expert e's own output for tokens x [N, d] mixed with weight w [N] (Llama 4 scales the
    input instead: its experts are not linear in it)."""
    experts = router.block.experts
    if router.scales_input:
        gate, up = ((x * w[:, None]) @ experts.gate_up_proj[e]).chunk(2, dim=-1)
        return (up * experts.act_fn(gate)) @ experts.down_proj[e]
    one = experts(x, torch.full((len(x), 1), e), torch.ones(len(x), 1))
    return w[:, None] * one


def _shared_outputs(router, x: torch.Tensor) -> list[torch.Tensor]:
    block = router.block
    module = getattr(block, "shared_expert", None) or getattr(block, "shared_experts", None)
    return [module(x)] if module is not None else []


def test_block_output_rebuilt_from_captured_routing(tiny):
    family, model, trace, seen = tiny
    table = []
    for i, (layer, router) in enumerate(routers(model).items()):
        x_in, out = seen[layer]
        out = out.reshape(x_in.shape)  # Llama 4 hands back [B*T, d]
        errors = []
        for p in range(2):
            x = x_in[p].reshape(-1, x_in.shape[-1])
            experts = trace.tensor("router_experts", p)[i]  # [T, k]
            weights = trace.tensor("router_weights", p)[i]
            shared = trace.tensor("shared_weights", p)[i]  # [T, S]
            rebuilt = torch.zeros_like(x)
            for t in range(len(x)):
                for e, w in zip(experts[t].tolist(), weights[t]):
                    rebuilt[t] += _expert_output(router, e, x[t : t + 1], w[None])[0]
            for s, y in enumerate(_shared_outputs(router, x)):
                rebuilt += shared[:, s : s + 1] * y
            target = out[p].reshape(-1, x.shape[-1])
            errors.append(float((rebuilt - target).norm() / target.norm()))
        table.append(max(errors))
        assert max(errors) <= 1e-5, (family, layer, errors)
    print(f"\n{family}: rebuild relative error per MoE layer {[f'{e:.1e}' for e in table]}")


def _hand_choice(family: str, router, x: torch.Tensor) -> list[set[int]]:
    """The family's formula, token by token in plain Python over floats."""
    module = router.module
    weight = module.weight.double()
    logits = x.double() @ weight.T
    if getattr(module, "bias", None) is not None:
        logits = logits + module.bias.double()
    k, out = router.top_k, []
    for z in logits.tolist():
        experts = range(len(z))
        if family in GROUPED:
            bias = module.e_score_correction_bias.tolist()
            c = [1 / (1 + math.exp(-v)) + b for v, b in zip(z, bias)]
            size = len(c) // module.num_group
            groups = [
                sorted(c[g * size : (g + 1) * size], reverse=True) for g in range(len(c) // size)
            ]
            best = sorted(range(len(groups)), key=lambda g: -(groups[g][0] + groups[g][1]))
            kept = set(best[: module.topk_group])
            experts = [e for e in experts if e // size in kept]
            score = c
        else:  # softmax and sigmoid are monotone: ranking by them is ranking by z
            score = z
        out.append(set(sorted(experts, key=lambda e: -score[e])[:k]))
    return out


def test_chosen_set_matches_the_family_formula_and_hf(tiny):
    family, model, trace, seen = tiny
    for i, (layer, router) in enumerate(routers(model).items()):
        x = seen[layer][0][0].reshape(-1, seen[layer][0].shape[-1])
        chosen = [set(row) for row in trace.tensor("router_experts", 0)[i].tolist()]
        assert chosen == _hand_choice(family, router, x)
        hf_out = router.module(x)
        if router.scales_input:  # Llama 4: (scores over all experts, 0 off the top-k; logits)
            hf_sets = [set(torch.nonzero(row).ravel().tolist()) for row in hf_out[0]]
        else:
            hf_sets = [set(row) for row in hf_out[2].tolist()]
        assert chosen == hf_sets


def test_deepseek_bias_and_groups_change_the_choice(tiny):
    family, model, trace, seen = tiny
    if family != "deepseek_v3":
        pytest.skip("DeepSeek-V3 only")
    assert trace.meta["cfg"]["moe_layers"] == [1, 2]  # layer 0 is dense
    assert hf_block(model, 0).__class__.__name__ == "DeepseekV3MLP"
    router = routers(model)[1]
    x = seen[1][0][0].reshape(-1, 32)
    s = (x @ router.module.weight.T).sigmoid()
    plain = [set(row) for row in s.topk(4, dim=-1).indices.tolist()]
    chosen = [set(row) for row in trace.tensor("router_experts", 0)[0].tolist()]
    assert sum(a != b for a, b in zip(plain, chosen)) >= 3  # without bias and groups: other sets
    # Weights: the unbiased s of the chosen, renormalised, times routed_scaling_factor.
    weights = trace.tensor("router_weights", 0)[0]
    experts = trace.tensor("router_experts", 0)[0]
    picked = s.gather(-1, experts)
    assert torch.allclose(weights, picked / picked.sum(-1, keepdim=True) * 2.5, atol=1e-6)


def test_sparse_frame_rows_shared_flag_and_entropy(tiny):
    family, model, trace, seen = tiny
    cfg = trace.meta["cfg"]
    routing = trace.routing
    n_tok = 2 * 9 * len(cfg["moe_layers"])
    assert len(routing) == n_tok * (cfg["top_k"] + cfg["n_shared"])
    assert routing.selected.all() and routing.shared.sum() == n_tok * cfg["n_shared"]
    assert (routing[routing.shared].expert >= cfg["n_experts"]).all()
    layer = cfg["moe_layers"][-1]
    router = routers(model)[layer]
    x = seen[layer][0][1].reshape(-1, 32)
    z = router.module(x)[router.logits_at].float()
    sigmoid = cfg["router"].startswith("sigmoid")
    dist = z.sigmoid() / z.sigmoid().sum(-1, keepdim=True) if sigmoid else z.softmax(-1)
    hand = -(dist * dist.log()).sum(-1).numpy()
    rows = routing.query(f"prompt == 1 and layer == {layer} and rank == 0").sort_values("pos")
    assert np.allclose(rows.entropy, hand, atol=1e-5)
