"""Train `tiny-hybrid`: a Nemotron-H-class LM that mixes Mamba2, attention and MoE layers.

Model class: `NemotronHForCausalLM`. Six layers, each one block with one mixer:
Mamba2, MoE, Mamba2, MoE, attention, MoE (Nemotron-H's "M E M E * E" pattern). Nothing adds
position information: no position embedding, no RoPE in the attention layer, as in the class.
Order can only come from the Mamba2 layers (a causal convolution and a decaying state) and
from causal attention itself.

MoE layers: 8 routed experts (non-gated relu² MLPs, d_mlp 32), top-2, plus one shared expert
(d_mlp 64) that every token uses. The router scores with a sigmoid and chooses by score + bias
(`e_score_correction_bias`); the bias moves towards balance after each step, as DeepSeek-V3's
auxiliary-loss-free balancing does (see train_many_experts.py), with no auxiliary loss.

Shape: d_model 64, Mamba2 with 4 heads of 32 (state 16, one group, conv 4), attention with
4 heads of 16, a 2048-token byte-level BPE vocabulary (pad id 1, BOS/EOS id 0), trained on
64-token windows of `interp.corpus` with next-token loss. Mamba2 runs transformers' torch path
(no kernels on CPU).

The control `--control attention` is the same model with each Mamba2 layer replaced by an
attention layer (still no positional encoding), trained the same way; the experiment
position_without_encoding.py trains it, it is not shipped.

    .venv/bin/python experiments/train_tiny_hybrid.py           # full run, 2 threads
    .venv/bin/python experiments/train_tiny_hybrid.py --quick --out /tmp/tiny-hybrid
    .venv/bin/python experiments/train_tiny_hybrid.py --control attention --out /tmp/ctl
"""

from __future__ import annotations

import torch
from lm_training import Recipe, main
from transformers import NemotronHConfig, NemotronHForCausalLM

from interp.scripts import run_script

GAMMA = 5e-3  # router bias step, as in train_many_experts.py
LAYERS = ["mamba", "moe", "mamba", "moe", "attention", "moe"]
FULL = dict(steps=400, batch=8, seq_len=64, eval_every=50, eval_windows=16,
            final_windows=64, tok_chars=300_000)  # fmt: skip
QUICK = dict(steps=4, batch=2, seq_len=64, eval_every=2, eval_windows=2, final_windows=4,
             tok_chars=50_000)  # fmt: skip


def build(layers: list[str]):
    def model(vocab_size: int, ids: dict) -> NemotronHForCausalLM:
        config = NemotronHConfig(
            vocab_size=vocab_size, hidden_size=64, layers_block_type=layers,
            num_attention_heads=4, num_key_value_heads=4, head_dim=16,
            mamba_num_heads=4, mamba_head_dim=32, ssm_state_size=16, n_groups=1, expand=2,
            conv_kernel=4, chunk_size=64, n_routed_experts=8, num_experts_per_tok=2,
            moe_intermediate_size=32, moe_shared_expert_intermediate_size=64, n_group=1,
            topk_group=1, norm_topk_prob=True, max_position_embeddings=256,
            tie_word_embeddings=False, **ids,
        )  # fmt: skip
        out = NemotronHForCausalLM(config)
        out.loads = {}  # per MoE layer: tokens routed to each expert in the last forward
        for i, layer in enumerate(out.model.layers):
            gate = getattr(layer.mixer, "gate", None)
            if gate is not None:
                gate.register_forward_hook(
                    lambda m, args, res, i=i: out.loads.__setitem__(
                        i, torch.bincount(res[2].reshape(-1), minlength=m.num_experts)
                    )
                )
        return out

    return model


def step_loss(m: NemotronHForCausalLM, x: torch.Tensor):
    out = m(input_ids=x, labels=x)
    vio = [float(n.max() / n.float().mean() - 1) for n in m.loads.values()]
    return out.loss, out.loss.item(), {"max_vio": sum(vio) / len(vio)}


@torch.no_grad()
def update_bias(m: NemotronHForCausalLM) -> None:
    """Auxiliary-loss-free balancing: b_i += gamma * sign(mean load - load_i)."""
    for i, load in m.loads.items():
        gate = m.model.layers[i].mixer.gate
        gate.e_score_correction_bias += GAMMA * torch.sign(load.float().mean() - load.float())


def recipe(name: str, layers: list[str]) -> Recipe:
    return Recipe(
        name=name, model=build(layers), step_loss=step_loss, full=FULL, quick=QUICK, lr=3e-3,
        warmup=30, after_step=update_bias, log_extra={"bias_gamma": GAMMA, "layers": layers},
    )  # fmt: skip


RECIPE = recipe("tiny-hybrid", LAYERS)
CONTROLS = {
    "attention": recipe(
        "tiny-hybrid-attention", ["attention" if k == "mamba" else k for k in LAYERS]
    )
}


if __name__ == "__main__":
    run_script(lambda: main(RECIPE, __doc__, CONTROLS))
