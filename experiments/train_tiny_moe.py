"""Train `tiny-moe`: a small offline mixture-of-experts LM for routing experiments.

Model class: OLMoE (`OlmoeForCausalLM`). Its router is the textbook one: a softmax over *all*
experts, top-k on those probabilities, and (with `norm_topk_prob=False`) the selected
experts are weighted by their raw softmax probability, not renormalised. So a routing frame's
`prob` column is the router's full distribution and `weight == prob` on selected experts,
which keeps every routing metric easy to state. Mixtral renormalises the top-k weights and
Qwen3-MoE makes it a config switch; OLMoE also has a TransformerLens bridge adapter.

Shape: 4 layers, d_model 128, 16 experts per layer (SwiGLU, d_mlp 96), top-2 routing, a
2048-token byte-level BPE vocabulary, context 256. About 3.2M parameters, stored in float32.
Trained on `interp.corpus` (stdlib code, pydoc prose, arithmetic) with next-token loss plus
the Switch-style load-balancing loss (`output_router_logits=True`, `router_aux_loss_coef`).

    .venv/bin/python experiments/train_tiny_moe.py            # full run, ~11 min on 1 thread
    .venv/bin/python experiments/train_tiny_moe.py --quick --out /tmp/tiny-moe   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizer trainer is Rust; keep it to 1 core

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from interp.corpus import DOMAINS, documents, held_out_windows  # noqa: E402
from interp.files import save_figure  # noqa: E402
from interp.scripts import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "interp" / "models" / "weights" / "tiny-moe"
REPORT_PNG = ROOT / "reports" / "tiny_moe_loss.png"
EOT = "<|endoftext|>"

FULL = dict(
    steps=1400, batch=8, eval_every=100, eval_windows=16, final_windows=64, tok_chars=800_000
)
QUICK = dict(steps=8, batch=2, eval_every=4, eval_windows=2, final_windows=4, tok_chars=50_000)
SEQ_LEN = 256
VOCAB = 2048
LR, WARMUP, MIN_LR_FRAC, WEIGHT_DECAY = 2e-3, 50, 0.1, 0.1
# Prose is the smallest domain (~0.4 MB); weighting it a bit less than a third keeps the run to
# a handful of epochs over it, and arithmetic needs the fewest tokens to learn.
MIX = {"code": 0.40, "prose": 0.35, "numbers": 0.25}
TIME_LIMIT_S = 17 * 60  # safety net only: the step count is sized to finish well before this


def model_config(vocab_size: int) -> OlmoeConfig:
    return OlmoeConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_experts=16,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        max_position_embeddings=SEQ_LEN,
        router_aux_loss_coef=0.01,
        output_router_logits=False,  # inference default; training asks for the logits per call
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )


def train_tokenizer(train_docs: dict[str, list[str]], chars: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on an equal character budget per domain, so no domain owns the merges."""
    sample = []
    for docs in train_docs.values():
        budget = chars
        for text in docs:
            sample.append(text[:budget])
            budget -= len(sample[-1])
            if budget <= 0:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=[EOT],  # id 0: document separator, BOS and padding
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT
    )


def token_stream(tokenizer: PreTrainedTokenizerFast, docs: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for text in docs:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(streams: dict[str, torch.Tensor], batch: int, gen: torch.Generator, bos: int):
    """Random BOS-prefixed windows, each from a domain drawn with the MIX weights."""
    weights = torch.tensor([MIX[d] for d in DOMAINS])
    rows = []
    for d in torch.multinomial(weights, batch, replacement=True, generator=gen).tolist():
        stream = streams[DOMAINS[d]]
        start = int(torch.randint(0, len(stream) - SEQ_LEN, (1,), generator=gen))
        rows.append(torch.cat([torch.tensor([bos]), stream[start : start + SEQ_LEN - 1]]))
    return torch.stack(rows)


@torch.no_grad()
def validation_loss(model: OlmoeForCausalLM, windows: torch.Tensor) -> float:
    """Mean next-token cross-entropy (nats) over every predicted position of the windows."""
    model.eval()
    total = 0.0
    for chunk in windows.split(8):
        total += model(input_ids=chunk, labels=chunk).loss.item() * len(chunk)
    model.train()
    return total / len(windows)


def unigram_loss(train: torch.Tensor, windows: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy of the windows' targets under add-one-smoothed train unigram frequencies."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    logp = (counts / counts.sum()).log()
    return -logp[windows[:, 1:]].mean().item()


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * progress)))


def plot_curve(log: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    curve = log["curve"]
    ax.plot([r["step"] for r in curve], [r["train_loss"] for r in curve], label="train", lw=2)
    for d in DOMAINS:
        ax.plot([r["step"] for r in curve], [r["val"][d] for r in curve], label=f"val {d}")
        ax.axhline(log["unigram"][d], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="tiny-moe (dotted: unigram baseline)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()

    train_docs = {d: documents(d, "train") for d in DOMAINS}
    if args.quick:  # a few documents per domain keep tokenising to a blink
        train_docs = {d: docs[:20] for d, docs in train_docs.items()}
    tokenizer = train_tokenizer(train_docs, run["tok_chars"])
    streams = {d: token_stream(tokenizer, docs) for d, docs in train_docs.items()}
    val = {d: held_out_windows(tokenizer, d, SEQ_LEN, run["final_windows"]) for d in DOMAINS}
    unigram = {d: unigram_loss(streams[d], val[d], len(tokenizer)) for d in DOMAINS}
    print(f"tokens: { {d: len(s) for d, s in streams.items()} }  unigram: {unigram}")

    config = model_config(len(tokenizer))
    model = OlmoeForCausalLM(config)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=LR,
        betas=(0.9, 0.95),
    )

    curve, lm_sum, aux_sum, n_sum, t_train = [], 0.0, 0.0, 0, time.time()
    step, stopped_early = 0, False
    while step < run["steps"]:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, run["steps"])
        x = sample_batch(streams, run["batch"], gen, tokenizer.bos_token_id)
        out = model(input_ids=x, labels=x, output_router_logits=True)
        out.loss.backward()  # the loss already includes router_aux_loss_coef * aux_loss
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        lm_sum += out.loss.item() - config.router_aux_loss_coef * out.aux_loss.item()
        aux_sum, n_sum = aux_sum + out.aux_loss.item(), n_sum + 1
        if step % run["eval_every"] == 0 or step == run["steps"]:
            k = run["eval_windows"]
            row = {
                "step": step,
                "tokens": step * run["batch"] * SEQ_LEN,
                "train_loss": lm_sum / n_sum,
                "aux_loss": aux_sum / n_sum,  # = top_k when perfectly balanced
                "val": {d: validation_loss(model, val[d][:k]) for d in DOMAINS},
                "elapsed_s": time.time() - t_train,
            }
            curve.append(row)
            lm_sum, aux_sum, n_sum = 0.0, 0.0, 0
            print(json.dumps(row))
            if time.time() - t0 > TIME_LIMIT_S:
                stopped_early = True
                break

    final = {d: validation_loss(model, val[d]) for d in DOMAINS}
    log = {
        "model_class": "OlmoeForCausalLM",
        "seed": args.seed,
        "quick": args.quick,
        "steps": step,
        "stopped_early": stopped_early,
        "batch": run["batch"],
        "seq_len": SEQ_LEN,
        "mix": MIX,
        "lr": LR,
        "n_params": sum(p.numel() for p in model.parameters()),
        "eval": {"seq_len": SEQ_LEN, "max_windows": run["final_windows"]},
        "eval_windows": run["eval_windows"],  # the curve's val losses use the first this many
        "val_windows": {d: len(val[d]) for d in DOMAINS},
        "val_loss": final,
        "unigram": unigram,
        "curve": curve,
        "wall_time_s": time.time() - t0,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    print(f"final val loss: {final}\nunigram baseline: {unigram}")
    print(f"wall time: {log['wall_time_s']:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    plot_curve(log, args.out / "loss.png" if args.quick else REPORT_PNG)


if __name__ == "__main__":
    run_script(main)
