"""What the scripts that train the shipped MoE models share: corpus streams, a byte-level BPE
tokenizer with a pad id of its own, batches, the unigram baseline, validation, the learning
rate schedule, the training loop and the checkpoint with its log.

A `Recipe` says what differs between models: the model, the loss of one step (tiny-moe adds
the Switch auxiliary loss), what happens after the optimiser step (the many-expert model
moves its router bias) and the extra numbers logged. Everything is seeded: the same seed gives
byte-identical weights on the same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the tokenizer trainer is Rust; keep it to 1 core

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from interp.corpus import DOMAINS, documents, held_out_windows  # noqa: E402
from interp.files import save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "interp" / "models" / "weights"
EOT, PAD = "<|endoftext|>", "<|pad|>"
VOCAB = 2048
# Prose is the smallest domain (~0.4 MB); weighting it a bit less than a third keeps the run to
# a handful of epochs over it, and arithmetic needs the fewest tokens to learn.
MIX = {"code": 0.40, "prose": 0.35, "numbers": 0.25}


@dataclass
class Recipe:
    name: str  # the zoo name: weights go to interp/models/weights/<name>
    model: Callable[[int, dict], torch.nn.Module]  # (vocab size, special ids) -> model
    # (model, batch [B, T]) -> (loss to minimise, next-token loss, extra numbers to log)
    step_loss: Callable[[torch.nn.Module, torch.Tensor], tuple[torch.Tensor, float, dict]]
    full: dict  # steps, batch, seq_len, eval_every, eval_windows, final_windows, tok_chars
    quick: dict
    lr: float = 2e-3
    warmup: int = 50
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    after_step: Callable[[torch.nn.Module], None] = lambda model: None
    log_extra: dict = field(default_factory=dict)


def train_tokenizer(train_docs: dict[str, list[str]], chars: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on an equal character budget per domain, so no domain owns the merges.
    id 0 separates documents (BOS and EOS); id 1 pads. A pad of its own matters: the
    embedding row of the pad id gets no gradient, so a BOS that is also the pad never trains."""
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
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=PAD
    )


def special_ids(tokenizer) -> dict:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def token_stream(tokenizer: PreTrainedTokenizerFast, docs: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for text in docs:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(streams: dict[str, torch.Tensor], batch: int, seq_len: int,
                 gen: torch.Generator, bos: int) -> torch.Tensor:  # fmt: skip
    """Random BOS-prefixed windows, each from a domain drawn with the MIX weights."""
    weights = torch.tensor([MIX[d] for d in DOMAINS])
    rows = []
    for d in torch.multinomial(weights, batch, replacement=True, generator=gen).tolist():
        stream = streams[DOMAINS[d]]
        start = int(torch.randint(0, len(stream) - seq_len, (1,), generator=gen))
        rows.append(torch.cat([torch.tensor([bos]), stream[start : start + seq_len - 1]]))
    return torch.stack(rows)


@torch.no_grad()
def validation_loss(model, windows: torch.Tensor) -> float:
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


def lr_at(recipe: Recipe, step: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_frac of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, steps - recipe.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return recipe.lr * (recipe.min_lr_frac + (1 - recipe.min_lr_frac) * cosine)


def plot_curve(log: dict, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    curve = log["curve"]
    ax.plot([r["step"] for r in curve], [r["train_loss"] for r in curve], label="train", lw=2)
    for d in DOMAINS:
        ax.plot([r["step"] for r in curve], [r["val"][d] for r in curve], label=f"val {d}")
        ax.axhline(log["unigram"][d], ls=":", lw=1, color=ax.lines[-1].get_color())
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"{title} (dotted: unigram baseline)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def train(recipe: Recipe, seed: int, quick: bool, out: Path | None) -> dict:
    """Train, save the checkpoint, tokenizer and training_log.json in `out`; return the log."""
    run = recipe.quick if quick else recipe.full
    out = out or WEIGHTS / recipe.name
    torch.set_num_threads(2)
    random.seed(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    seq_len = run["seq_len"]

    train_docs = {d: documents(d, "train") for d in DOMAINS}
    if quick:  # a few documents per domain keep tokenising to a blink
        train_docs = {d: docs[:20] for d, docs in train_docs.items()}
    tokenizer = train_tokenizer(train_docs, run["tok_chars"])
    streams = {d: token_stream(tokenizer, docs) for d, docs in train_docs.items()}
    val = {d: held_out_windows(tokenizer, d, seq_len, run["final_windows"]) for d in DOMAINS}
    unigram = {d: unigram_loss(streams[d], val[d], len(tokenizer)) for d in DOMAINS}
    print(f"tokens: { {d: len(s) for d, s in streams.items()} }  unigram: {unigram}")

    model = recipe.model(len(tokenizer), special_ids(tokenizer))
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay},
         {"params": no_decay, "weight_decay": 0}],
        lr=recipe.lr, betas=(0.9, 0.95),
    )  # fmt: skip

    curve, sums, n_sum, t_train = [], {}, 0, time.time()
    for step in range(1, run["steps"] + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(recipe, step - 1, run["steps"])
        x = sample_batch(streams, run["batch"], seq_len, gen, tokenizer.bos_token_id)
        loss, lm_loss, extra = recipe.step_loss(model, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        recipe.after_step(model)
        for name, value in {"train_loss": lm_loss, **extra}.items():
            sums[name] = sums.get(name, 0.0) + value
        n_sum += 1
        if step % run["eval_every"] == 0 or step == run["steps"]:
            k = run["eval_windows"]
            row = {"step": step, "tokens": step * run["batch"] * seq_len,
                   **{name: total / n_sum for name, total in sums.items()},
                   "val": {d: validation_loss(model, val[d][:k]) for d in DOMAINS},
                   "elapsed_s": time.time() - t_train}  # fmt: skip
            curve.append(row)
            sums, n_sum = {}, 0
            print(json.dumps(row), flush=True)

    final = {d: validation_loss(model, val[d]) for d in DOMAINS}
    log = {
        "model_class": type(model).__name__,
        "seed": seed,
        "quick": quick,
        "steps": run["steps"],
        "batch": run["batch"],
        "seq_len": seq_len,
        "mix": MIX,
        "lr": recipe.lr,
        **recipe.log_extra,
        "n_params": sum(p.numel() for p in model.parameters()),
        "eval": {"seq_len": seq_len, "max_windows": run["final_windows"]},
        "eval_windows": run["eval_windows"],  # the curve's val losses use the first this many
        "val_windows": {d: len(val[d]) for d in DOMAINS},
        "val_loss": final,
        "unigram": unigram,
        "curve": curve,
        "wall_time_s": time.time() - t0,
        "cpu_time_s": time.process_time(),  # wall time counts other processes on a shared CPU
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    print(f"final val loss: {final}\nunigram baseline: {unigram}")
    print(f"wall time: {log['wall_time_s']:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
    png = out / "loss.png" if quick else ROOT / "reports" / f"{recipe.name}_loss.png"
    plot_curve(log, png, recipe.name)
    return log


def main(recipe: Recipe, description: str, controls: dict[str, Recipe] | None = None) -> None:
    """The command line the training scripts share: --quick, --out, --seed, and --control
    NAME where a script also trains the control models its experiments compare against."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint directory")
    parser.add_argument("--seed", type=int, default=0)
    if controls:
        parser.add_argument("--control", choices=sorted(controls), default=None,
                            help="train this control instead of the zoo model")  # fmt: skip
    args = parser.parse_args()
    chosen = controls[args.control] if getattr(args, "control", None) else recipe
    train(chosen, args.seed, args.quick, args.out)


def trained(recipe: Recipe, seed: int, quick: bool) -> Path:
    """A control's checkpoint: the one shipped in experiments/controls/ (the full runs at seed
    0, trained by this function: their training took minutes of a fresh clone's test run), else
    trained on first use into reports/controls/ (the same seed gives the same weights, so a
    kept copy is as good as a fresh one)."""
    name = f"{recipe.name}-seed{seed}{'-quick' if quick else ''}"
    shipped = ROOT / "experiments" / "controls" / name
    if (shipped / "training_log.json").is_file():
        return shipped
    out = ROOT / "reports" / "controls" / name
    if not (out / "training_log.json").is_file():
        train(recipe, seed, quick, out)
    return out
