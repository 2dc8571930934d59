"""Train `tiny-deepseek`: a many-expert MoE LM routed the way DeepSeek-V3 and Kimi K2 route.

Model class: DeepSeek-V3 (`DeepseekV3ForCausalLM`, the architecture Kimi K2 ships in). Per MoE
layer 64 routed experts, 8 chosen per token from the 4 best of 8 groups, plus one shared expert
that every token uses. The router scores with a sigmoid, s = sigmoid(z), and chooses by
s + b; the chosen weights are s renormalised, times routed_scaling_factor.

Balance comes from the bias b (`e_score_correction_bias`), as in DeepSeek-V3 ("auxiliary-loss-
free load balancing"): no auxiliary loss; after each optimiser step, every expert's bias moves
by gamma towards balance, b_i += gamma * sign(mean load - load_i), loads counted over the
batch's tokens. The gradient never sees b.

Shape: 3 layers (the first dense, as DeepSeek-V3's first layers are), d_model 64, multi-head
latent attention (kv_lora_rank 32), expert d_mlp 16, a 2048-token byte-level BPE vocabulary
(pad id 1, BOS/EOS id 0), context 256, trained on 64-token windows of `interp.corpus` with
next-token loss.

For speed only, training runs every expert on every token and keeps the chosen ones (the
`dense` experts implementation below): the same function as transformers' loop over experts,
without 64 small matrix products per layer. The checkpoint loads with transformers' default.

    .venv/bin/python experiments/train_many_experts.py           # full run, 2 threads
    .venv/bin/python experiments/train_many_experts.py --quick --out /tmp/tiny-deepseek
"""

from __future__ import annotations

import torch
from lm_training import Recipe, main
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

from interp.scripts import run_script

# Bias update speed. DeepSeek-V3 uses 0.001 over trillions of tokens; a few hundred steps need a
# faster one to reach balance while the router is still learning.
GAMMA = 5e-3
FULL = dict(steps=400, batch=8, seq_len=64, eval_every=50, eval_windows=16,
            final_windows=64, tok_chars=300_000)  # fmt: skip
QUICK = dict(steps=6, batch=2, seq_len=64, eval_every=3, eval_windows=2, final_windows=4,
             tok_chars=50_000)  # fmt: skip


def dense_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    """Every expert on every token, mixed by the chosen weights (0 elsewhere): two matrix
    products, sum_e mix[t, e] * down_e(h[t, e]) = (mix * h)[t, (e i)] @ down[(e i), d]."""
    n_exp, _, d = self.gate_up_proj.shape
    gate_up = (hidden_states @ self.gate_up_proj.reshape(-1, d).T).unflatten(-1, (n_exp, -1))
    mix = torch.zeros(len(hidden_states), n_exp, dtype=hidden_states.dtype).scatter_add(
        1, top_k_index, top_k_weights.to(hidden_states.dtype)
    )
    h = self._apply_gate(gate_up) * mix[..., None]  # [token expert d_mlp]
    return h.flatten(1) @ self.down_proj.transpose(1, 2).reshape(-1, d)


ALL_EXPERTS_FUNCTIONS.register("dense", dense_experts_forward)


def model(vocab_size: int, ids: dict) -> DeepseekV3ForCausalLM:
    config = DeepseekV3Config(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=192, moe_intermediate_size=16,
        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4,
        num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=32, qk_rope_head_dim=8,
        qk_nope_head_dim=16, v_head_dim=16, n_routed_experts=64, num_experts_per_tok=8,
        n_group=8, topk_group=4, n_shared_experts=1, norm_topk_prob=True,
        routed_scaling_factor=2.5, max_position_embeddings=256, tie_word_embeddings=False,
        **ids,
    )  # fmt: skip
    config._experts_implementation = "dense"
    out = DeepseekV3ForCausalLM(config)
    out.loads = {}  # per MoE layer: tokens routed to each expert in the last forward
    for i, layer in enumerate(out.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None and hasattr(gate, "e_score_correction_bias"):
            gate.register_forward_hook(
                lambda m, args, res, i=i: out.loads.__setitem__(
                    i, torch.bincount(res[2].reshape(-1), minlength=m.num_experts)
                )
            )
    return out


def step_loss(m: DeepseekV3ForCausalLM, x: torch.Tensor):
    out = m(input_ids=x, labels=x)
    # MaxVio (DeepSeek-V3): max load / mean load - 1, this batch, mean over MoE layers.
    vio = [float(n.max() / n.float().mean() - 1) for n in m.loads.values()]
    return out.loss, out.loss.item(), {"max_vio": sum(vio) / len(vio)}


@torch.no_grad()
def update_bias(m: DeepseekV3ForCausalLM) -> None:
    """DeepSeek-V3's auxiliary-loss-free balancing: b_i += gamma * sign(mean load - load_i)."""
    for i, load in m.loads.items():
        gate = m.model.layers[i].mlp.gate
        gate.e_score_correction_bias += GAMMA * torch.sign(load.float().mean() - load.float())


RECIPE = Recipe(
    name="tiny-deepseek", model=model, step_loss=step_loss, full=FULL, quick=QUICK, lr=3e-3,
    warmup=30, after_step=update_bias, log_extra={"bias_gamma": GAMMA, "aux_loss": None},
)  # fmt: skip


if __name__ == "__main__":
    run_script(lambda: main(RECIPE, __doc__))
