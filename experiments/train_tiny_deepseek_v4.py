"""Train `tiny-deepseek-v4`: a DeepSeek-V4-class LM with four residual streams (mHC).

Model class: `DeepseekV4ForCausalLM`. The residual stream is `hc_mult` = 4 parallel streams;
before each sub-block a hyper-connection collapses them into the block's input (pre), expands
the block's output back into them (post) and mixes them (comb), all computed from the streams
themselves. Sinkhorn iterations (`hc_sinkhorn_iters`) keep each comb doubly stochastic.

Layers: sliding-window attention (window 16), compressed-sparse attention (one compressed
entry per 4 tokens, with the indexer choosing the top 8), heavily-compressed attention (one
entry per 16 tokens), compressed-sparse again. Feed-forward: the first layer hash-routed (a
fixed token-id -> expert table, drawn here from the seed because the class initialises it to
zeros, which would send every token to expert 0), the others top-2 of 8 routed experts with a
sigmoid score chosen by score + bias, the bias moved towards balance after each step as in
train_many_experts.py; one shared expert everywhere.

Shape: d_model 64, 4 query heads of 32 sharing one KV head, q_lora_rank 32, expert d_mlp 32,
a 2048-token byte-level BPE vocabulary (pad id 1, BOS/EOS id 0), trained on 64-token windows
of `interp.corpus` with next-token loss.

The control `--control unconstrained` drops the Sinkhorn constraint (not shipped; trained by
residual_highways.py). No config switch turns it off (`hc_sinkhorn_iters` 0 or 1 still
normalises the columns once), so `unconstrain` rebinds each hyper-connection's forward to
compute comb as in the original hyper-connections (Zhu et al. 2024): identity plus a tanh of
the same learned projection, no normalisation. Load the control with `unconstrain` applied.

    .venv/bin/python experiments/train_tiny_deepseek_v4.py           # full run, 2 threads
    .venv/bin/python experiments/train_tiny_deepseek_v4.py --quick --out /tmp/tiny-v4
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from lm_training import Recipe, main
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4HyperConnection

from interp.scripts import run_script

GAMMA = 5e-3  # router bias step, as in train_many_experts.py
FULL = dict(steps=400, batch=8, seq_len=64, eval_every=50, eval_windows=16,
            final_windows=64, tok_chars=300_000)  # fmt: skip
QUICK = dict(steps=4, batch=2, seq_len=64, eval_every=2, eval_windows=2, final_windows=4,
             tok_chars=50_000)  # fmt: skip


def config(vocab_size: int, ids: dict) -> DeepseekV4Config:
    return DeepseekV4Config(
        vocab_size=vocab_size, hidden_size=64, moe_intermediate_size=32, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, q_lora_rank=32,
        partial_rotary_factor=0.25, n_routed_experts=8, num_experts_per_tok=2,
        n_shared_experts=1, scoring_func="sigmoid",
        layer_types=["sliding_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention", "compressed_sparse_attention"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        mlp_layer_types=["hash_moe", "moe", "moe", "moe"], hc_mult=4, hc_sinkhorn_iters=20,
        sliding_window=16, o_groups=2, o_lora_rank=32, index_n_heads=2, index_head_dim=16,
        index_topk=8, num_nextn_predict_layers=0, max_position_embeddings=256,
        tie_word_embeddings=False, **ids,
    )  # fmt: skip


def unconstrained_forward(self, hidden_streams: torch.Tensor):
    """DeepseekV4HyperConnection.forward with comb = I + tanh(projection), no Sinkhorn."""
    batch_size, seq_len = hidden_streams.shape[:2]
    hc = self.hc_mult
    flattened = self.input_norm(hidden_streams.view(batch_size, seq_len, -1).float())
    pre_w, post_w, comb_w = F.linear(flattened, self.fn.float()).split([hc, hc, hc * hc], -1)
    pre_b, post_b, comb_b = self.base.split([hc, hc, hc * hc])
    pre_scale, post_scale, comb_scale = self.scale.unbind(0)
    pre = torch.sigmoid(pre_w * pre_scale + pre_b) + self.hc_eps
    post = 2 * torch.sigmoid(post_w * post_scale + post_b)
    comb_w = comb_w.view(*comb_w.shape[:-1], hc, hc)
    comb = torch.eye(hc) + torch.tanh(comb_w * comb_scale + comb_b.view(hc, hc))
    collapsed = (pre.unsqueeze(-1) * hidden_streams).sum(dim=2).to(hidden_streams.dtype)
    return post, comb, collapsed


def unconstrain(model: DeepseekV4ForCausalLM) -> DeepseekV4ForCausalLM:
    for module in model.modules():
        if isinstance(module, DeepseekV4HyperConnection):
            module.forward = types.MethodType(unconstrained_forward, module)
    model.config.hc_constraint = "none (I + tanh, experiments/train_tiny_deepseek_v4.py)"
    return model


def build(sinkhorn: bool):
    def model(vocab_size: int, ids: dict) -> DeepseekV4ForCausalLM:
        out = DeepseekV4ForCausalLM(config(vocab_size, ids))
        out.loads = {}  # per top-k MoE layer: tokens routed to each expert in the last forward
        for i, layer in enumerate(out.model.layers):
            gate = layer.mlp.gate
            if hasattr(gate, "tid2eid"):  # a fixed random table of distinct experts per token
                table = torch.rand(vocab_size, gate.num_experts).argsort(dim=1)[:, : gate.top_k]
                gate.tid2eid.copy_(table)
            else:
                gate.register_forward_hook(
                    lambda m, args, res, i=i: out.loads.__setitem__(
                        i, torch.bincount(res[2].reshape(-1), minlength=m.num_experts)
                    )
                )
        return out if sinkhorn else unconstrain(out)

    return model


def step_loss(m: DeepseekV4ForCausalLM, x: torch.Tensor):
    out = m(input_ids=x, labels=x)
    vio = [float(n.max() / n.float().mean() - 1) for n in m.loads.values()]
    return out.loss, out.loss.item(), {"max_vio": sum(vio) / len(vio)}


@torch.no_grad()
def update_bias(m: DeepseekV4ForCausalLM) -> None:
    """Auxiliary-loss-free balancing: b_i += gamma * sign(mean load - load_i)."""
    for i, load in m.loads.items():
        gate = m.model.layers[i].mlp.gate
        gate.e_score_correction_bias += GAMMA * torch.sign(load.float().mean() - load.float())


def recipe(name: str, sinkhorn: bool) -> Recipe:
    return Recipe(
        name=name, model=build(sinkhorn), step_loss=step_loss, full=FULL, quick=QUICK,
        lr=3e-3, warmup=30, after_step=update_bias,
        log_extra={"bias_gamma": GAMMA, "sinkhorn": sinkhorn},
    )  # fmt: skip


RECIPE = recipe("tiny-deepseek-v4", sinkhorn=True)
CONTROLS = {"unconstrained": recipe("tiny-deepseek-v4-unconstrained", sinkhorn=False)}


if __name__ == "__main__":
    run_script(lambda: main(RECIPE, __doc__, CONTROLS))
