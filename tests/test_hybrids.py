"""transformers' other hybrids, on tiny random checkpoints: each traces (logits equal the
model's own) or is refused in one InterpError line naming the layer kind interp cannot read.

Status (transformers 5.23, TransformerLens 4.3):
  Falcon-H1        loads; attention and Mamba2 run in parallel on one input and TL's
                   hook_attn_out holds only the attention part: residual/attention refused,
                   logits and hooks by name traced
  Jamba            loads; Mamba1 layers have no output hook: refused, hooks by name traced
  Granite-4 hybrid loads, but TL's bridge maps a rotary embedding the checkpoint lacks (no
                   position embedding) and fails every forward: refused (its Mamba2 layers
                   also have no output hook)
  Qwen3-Next       loads; Gated DeltaNet layers have no output hook: refused, hooks by name
  Kimi Linear      TransformerLens has no bridge: interp.load refuses
"""

from __future__ import annotations

import pytest
import torch

import interp

C = dict(vocab_size=101, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
         max_position_embeddings=64, num_hidden_layers=2, intermediate_size=48)  # fmt: skip
MAMBA = dict(mamba_d_state=8, mamba_d_conv=4, mamba_expand=2)


def _config(name: str):
    import transformers as T

    return {
        "jamba": lambda: T.JambaConfig(**C, **MAMBA, attn_layer_period=2, attn_layer_offset=1,
                                       expert_layer_period=2, expert_layer_offset=1,
                                       num_experts=4, num_experts_per_tok=2),
        "granitemoehybrid": lambda: T.GraniteMoeHybridConfig(
            **C, **MAMBA, layer_types=["mamba", "attention"], num_local_experts=4,
            num_experts_per_tok=2, shared_intermediate_size=16, mamba_n_heads=4,
            mamba_d_head=16, mamba_n_groups=1, mamba_chunk_size=8),
        "falcon_h1": lambda: T.FalconH1Config(
            **C, **MAMBA, head_dim=8, mamba_n_heads=4, mamba_d_head=16, mamba_d_ssm=64,
            mamba_n_groups=1, mamba_chunk_size=8),
        "qwen3_next": lambda: T.Qwen3NextConfig(
            **C, head_dim=8, layer_types=["linear_attention", "full_attention"],
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
            shared_expert_intermediate_size=16, linear_num_value_heads=2,
            linear_num_key_heads=2, linear_key_head_dim=8, linear_value_head_dim=8),
        "kimi_linear": lambda: T.KimiLinearConfig(**C, head_dim=8, pad_token_id=0,
                                                  bos_token_id=1, eos_token_id=2),
    }[name]()  # fmt: skip


REFUSED = {
    "jamba": "'mamba' layers (0)",
    "granitemoehybrid": "'mamba2' layers (0)",
    "qwen3_next": "'gated_deltanet' layers (0)",
    "falcon_h1": "'parallel_attention_mamba2' layers (0, 1)",
}
IDS = torch.tensor([3, 17, 42, 8, 99, 23])


def _save(name: str, tmp_path) -> str:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(_config(name)).save_pretrained(tmp_path)
    return str(tmp_path)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_hybrid_refused_in_one_line_and_still_captures_by_name(name, tmp_path):
    model = interp.load(_save(name, tmp_path))
    with pytest.raises(interp.InterpError) as refused:
        interp.trace(model, IDS, max_new_tokens=2)
    message = str(refused.value)
    assert "\n" not in message and REFUSED[name] in message and "capture=" in message
    names = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post"]
    if name == "granitemoehybrid":
        with pytest.raises(interp.InterpError, match="cannot run a forward pass"):
            interp.trace(model, IDS, capture=names)
        return
    trace = interp.trace(model, IDS, capture=names, max_new_tokens=2)
    record = trace.records[0]
    full = model.original_model(record.ids[None]).logits[0, len(IDS) - 1 :].float()
    assert (record.query_logits - full).abs().max() <= 1e-4
    assert trace.tensor(names[1], 0).shape == (len(IDS) + 2, 32)
    # The stream entering layer 0 is transformers' first hidden state (the embeddings).
    hidden = model.original_model(record.ids[None], output_hidden_states=True).hidden_states
    assert torch.allclose(trace.tensor(names[0], 0), hidden[0][0], atol=1e-6)


def test_kimi_linear_refused_at_load(tmp_path):
    path = _save("kimi_linear", tmp_path)
    with pytest.raises(interp.InterpError) as refused:
        interp.load(path)
    message = str(refused.value)
    assert "\n" not in message and "KimiLinearForCausalLM" in message
    assert "kimi_delta_attention" in message
