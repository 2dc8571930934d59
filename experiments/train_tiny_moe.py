"""Train `tiny-moe`: a small offline mixture-of-experts LM for routing experiments.

Model class: OLMoE (`OlmoeForCausalLM`). Its router is the textbook one: a softmax over *all*
experts, top-k on those probabilities, and (with `norm_topk_prob=False`) the selected
experts are weighted by their raw softmax probability, not renormalised. So a routing frame's
`prob` column is the router's full distribution and `weight == prob` on selected experts,
which keeps every routing metric easy to state. Mixtral renormalises the top-k weights and
Qwen3-MoE makes it a config switch; OLMoE also has a TransformerLens bridge adapter.

Shape: 4 layers, d_model 128, 16 experts per layer (SwiGLU, d_mlp 96), top-2 routing, a
2048-token byte-level BPE vocabulary (pad id 1, BOS/EOS id 0), context 256. About 3.2M
parameters, stored in float32.
Trained on `interp.corpus` (stdlib code, pydoc prose, arithmetic) with next-token loss plus
the Switch-style load-balancing loss (`output_router_logits=True`, `router_aux_loss_coef`).

    .venv/bin/python experiments/train_tiny_moe.py            # full run, 2 threads
    .venv/bin/python experiments/train_tiny_moe.py --quick --out /tmp/tiny-moe   # smoke run
"""

from __future__ import annotations

import torch
from lm_training import Recipe, main
from transformers import OlmoeConfig, OlmoeForCausalLM

from interp.scripts import run_script

FULL = dict(steps=1400, batch=8, seq_len=256, eval_every=100, eval_windows=16,
            final_windows=64, tok_chars=800_000)  # fmt: skip
QUICK = dict(steps=8, batch=2, seq_len=256, eval_every=4, eval_windows=2, final_windows=4,
             tok_chars=50_000)  # fmt: skip
AUX_COEF = 0.01


def model(vocab_size: int, ids: dict) -> OlmoeForCausalLM:
    config = OlmoeConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, num_experts=16, num_experts_per_tok=2,
        norm_topk_prob=False, max_position_embeddings=256, router_aux_loss_coef=AUX_COEF,
        output_router_logits=False,  # inference default; training asks for the logits per call
        tie_word_embeddings=False, **ids,
    )  # fmt: skip
    return OlmoeForCausalLM(config)


def step_loss(m: OlmoeForCausalLM, x: torch.Tensor):
    out = m(input_ids=x, labels=x, output_router_logits=True)
    # out.loss already includes AUX_COEF * aux_loss (= top_k when perfectly balanced).
    aux = out.aux_loss.item()
    return out.loss, out.loss.item() - AUX_COEF * aux, {"aux_loss": aux}


RECIPE = Recipe(name="tiny-moe", model=model, step_loss=step_loss, full=FULL, quick=QUICK)


if __name__ == "__main__":
    run_script(lambda: main(RECIPE, __doc__))
