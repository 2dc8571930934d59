"""Induction needs two layers: train attention-only transformers with 1 and 2 layers on text that
repeats itself, and watch only the 2-layer one learn in-context copying.

An induction head at token B attends to the token after an earlier B and copies it; finding "the
token after an earlier B" needs a key that knows its previous token, written there by a
previous-token head one layer below (K-composition). A single layer has no layer below, so
(Elhage et al. 2021; Olsson et al. 2022) predict: the 2-layer model grows a previous-token head in
layer 0 and an induction head in layer 1, and its loss on repeated text falls far below its loss on
fresh text; the 1-layer model does neither.

Data: BOS, then random tokens in which one random span of 8..31 tokens appears three times (twice
when three do not fit), with random gaps around the copies. Span length, places and gaps vary, so
no fixed positional offset finds an earlier copy (back-to-back copies let a one-layer model copy
from a range of offsets instead); only induction does. About 40% of the targets lie in a repeat:
with one copy of a shorter span (~20%) the induction head had not formed after 3000 steps; with
this data it forms after ~500.

    python experiments/induction_needs_two_layers.py            # ~3 min on 1 CPU thread
    python experiments/induction_needs_two_layers.py --quick --out /tmp/induction
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

from interp.analysis.induction import (  # noqa: E402
    ablation_hooks,
    copy_scores,
    head_scores,
    icl_losses,
    repeated_tokens,
    token_logprobs,
)
from interp.files import save_figure  # noqa: E402
from interp.models.native import save_native  # noqa: E402
from interp.scripts import run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOS = 0
VOCAB = 128  # ids 1..127 are text; small, so the models stay ~200 KB
N_CTX = 64
SPAN = (8, 31)  # repeated span length, inclusive range
MAX_COPIES = 3  # as many as fit in N_CTX - 1: 3 up to length 21, then 2
PROBE_SEQ_LEN = 24  # probe rows: BOS + 24 random tokens + the same 24 again (49 <= N_CTX)


def model_config(n_layers: int, seed: int) -> dict:
    return {
        "architecture": "TransformerLensNative",
        "n_layers": n_layers,
        "d_model": 64,
        "n_heads": 4,
        "d_head": 16,
        "n_ctx": N_CTX,
        "d_vocab": VOCAB,
        "attn_only": True,
        "normalization_type": "LN",
        # Rotary: positions enter only q.k, so a previous-token head is one relative offset and
        # the residual stream carries token identity alone for the next layer's keys to match.
        "positional_embedding_type": "rotary",
        "seed": seed,
    }


def copy_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [batch, N_CTX] and `copied` [batch, N_CTX - 1]: True where the next-token target
    lies inside a repeat after its first token, i.e. where induction can predict it."""
    tokens = torch.randint(1, VOCAB, (batch, N_CTX), generator=generator)
    tokens[:, 0] = BOS
    copied = torch.zeros(batch, N_CTX - 1, dtype=torch.bool)
    for row in range(batch):
        length = int(torch.randint(SPAN[0], SPAN[1] + 1, (), generator=generator))
        copies = min(MAX_COPIES, (N_CTX - 1) // length)
        # Random gaps before, between and after the copies: cut the free positions at
        # sorted random points.
        free = N_CTX - 1 - copies * length
        cuts = torch.randint(0, free + 1, (copies,), generator=generator).sort().values
        starts = [1 + int(cut) + i * length for i, cut in enumerate(cuts)]
        span = tokens[row, starts[0] : starts[0] + length].clone()
        for start in starts[1:]:
            tokens[row, start : start + length] = span
            # target t + 1 lives at logits position t
            copied[row, start : start + length - 1] = True
    return tokens, copied


def split_losses(model: TransformerBridge, tokens: torch.Tensor, copied: torch.Tensor):
    logits = model(tokens[:, :-1])
    loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    return loss.mean(), loss[copied].mean(), loss[~copied].mean()


def train(n_layers: int, args: argparse.Namespace) -> tuple[TransformerBridge, list[dict], float]:
    model = TransformerBridge.boot_native(model_config(n_layers, args.seed))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01
    )
    warmup = max(1, args.steps // 20)
    # Linear warmup, then cosine to 10%: the standard small-transformer schedule.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / warmup)
            * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / args.steps)))
        ),
    )
    generator = torch.Generator().manual_seed(args.seed)
    held_out = copy_batch(256, torch.Generator().manual_seed(args.seed + 10_000))
    curve, start = [], time.time()
    for step in range(args.steps + 1):
        if step % args.log_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                total, repeated, fresh = split_losses(model, *held_out)
            curve.append(
                {
                    "layers": n_layers,
                    "step": step,
                    "loss": total.item(),
                    "repeated_loss": repeated.item(),
                    "fresh_loss": fresh.item(),
                }
            )
            print(
                f"  {n_layers}L step {step:5d}  loss {total:.3f}  repeated {repeated:.3f}"
                f"  fresh {fresh:.3f}  {time.time() - start:5.0f}s",
                flush=True,
            )
            model.train()
        if step == args.steps:
            break
        loss, _, _ = split_losses(model, *copy_batch(args.batch, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return model, curve, time.time() - start


def evaluate(model: TransformerBridge, n_layers: int, seed: int) -> dict:
    """Head scores, first/second-copy loss, and the second-copy loss rise when each head alone
    is ablated (zero and mean), on the repeated probe. Unlike `interp induction`, which ablates
    only heads that score as induction heads, this ablates every head: in a two-layer model
    the previous-token heads matter as much."""
    tokens = repeated_tokens(64, PROBE_SEQ_LEN, seed, low=1, high=VOCAB, sink_token=BOS)
    with torch.no_grad():
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda n: n.endswith(("hook_pattern", "hook_z"))
        )
    patterns = torch.stack([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(n_layers)], 1)
    # Mean over the random tokens, not the BOS: the probe's typical output of each head.
    z_means = torch.stack(
        [cache[f"blocks.{i}.attn.hook_z"][:, 1:].mean((0, 1)) for i in range(n_layers)]
    )
    scores = head_scores(patterns, PROBE_SEQ_LEN, has_sink=True)
    ln1 = torch.stack([block.ln1.weight for block in model.blocks])
    copying = copy_scores(model.W_E, model.W_V, model.W_O, model.W_U, ln1, model.ln_final.weight)
    scores = scores.merge(copying)
    losses = icl_losses(token_logprobs(logits, tokens), PROBE_SEQ_LEN, has_sink=True)
    for mode in ("zero", "mean"):
        deltas = []
        for layer, head in zip(scores.layer, scores["head"], strict=True):
            hooks = ablation_hooks([(int(layer), int(head))], mode, means=z_means)
            with torch.no_grad():
                ablated = model.run_with_hooks(tokens, fwd_hooks=hooks)
            after = icl_losses(token_logprobs(ablated, tokens), PROBE_SEQ_LEN, has_sink=True)
            deltas.append(after["second_copy_loss"] - losses["second_copy_loss"])
        scores[f"{mode}_ablation_delta"] = deltas
    scores.insert(0, "layers", n_layers)
    return {"scores": scores, "losses": losses, "example": (tokens[0], patterns[0])}


def expectations(results: dict[int, dict]) -> dict[str, bool]:
    """What Elhage et al. 2021 and Olsson et al. 2022 predict, checked on the probe."""
    one, two = results[1]["scores"], results[2]["scores"]
    losses = results[2]["losses"]
    return {
        "2L: a previous-token head in layer 0 (score > 0.5)": bool(
            two[two.layer == 0].previous_token.max() > 0.5
        ),
        "2L: an induction head in layer 1 (score > 0.5)": bool(
            two[two.layer == 1].induction.max() > 0.5
        ),
        "2L: second-copy loss < 0.3 x first-copy loss": bool(
            losses["second_copy_loss"] < 0.3 * losses["first_copy_loss"]
        ),
        "1L: no head with induction score >= 0.2": bool(one.induction.max() < 0.2),
    }


def plot(curves: pd.DataFrame, results: dict[int, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    ax = axes[0]
    for n_layers, colour in ((1, "tab:blue"), (2, "tab:red")):
        curve = curves[curves.layers == n_layers]
        ax.plot(curve.step, curve.repeated_loss, color=colour, label=f"{n_layers}L repeated")
        ax.plot(curve.step, curve.fresh_loss, color=colour, ls="--", label=f"{n_layers}L fresh")
    ax.axhline(math.log(VOCAB - 1), color="grey", lw=0.7, label="log(vocab): uniform guess")
    ax.set(xlabel="step", ylabel="held-out loss (nats)", title="loss on copied vs fresh tokens")
    ax.legend(fontsize=7)
    for ax, column in zip(axes[1:3], ("induction", "previous_token"), strict=True):
        for n_layers, result in results.items():
            s = result["scores"]
            ax.scatter(
                s["head"] + (0.1 if n_layers == 2 else -0.1),
                s[column],
                c=s.layer,
                cmap="coolwarm",
                vmin=0,
                vmax=1,
                marker="o" if n_layers == 2 else "x",
                label=f"{n_layers}L model",
            )
        ax.set(
            xlabel="head (colour: layer 0 blue / 1 red)",
            ylabel=f"{column} score",
            ylim=(-0.02, 1.02),
            title=f"{column} score per head",
        )
        ax.legend(fontsize=7)
    tokens, patterns = results[2]["example"]
    s2 = results[2]["scores"]
    best = s2.loc[s2.induction.idxmax()]
    axes[3].imshow(patterns[int(best.layer), int(best["head"])].numpy(), cmap="viridis")
    axes[3].set(
        title=f"2L head {int(best.layer)}.{int(best['head'])} on [BOS] A A",
        xlabel="key position",
        ylabel="query position",
    )
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "induction_needs_two_layers")
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="where to save attn-only-{1l,2l} (default: the package's weights, "
        "or OUT/weights with --quick)",
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.log_every = 30, 10
    weights = args.weights or (
        args.out / "weights" if args.quick else ROOT / "interp/models/weights"
    )
    torch.set_num_threads(1)  # the machine is shared; one thread is also the reproducible choice
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    curves, results, wall = [], {}, {}
    for n_layers in (1, 2):
        print(f"training the {n_layers}-layer attention-only model ({args.steps} steps)")
        model, curve, wall[n_layers] = train(n_layers, args)
        curves += curve
        save_native(model, model_config(n_layers, args.seed), weights / f"attn-only-{n_layers}l")
        results[n_layers] = evaluate(model, n_layers, seed=args.seed + 1)

    curves = pd.DataFrame(curves)
    scores = pd.concat([r["scores"] for r in results.values()], ignore_index=True)
    plot(curves, results, args.out / "induction_needs_two_layers.png")
    summary = {
        "command": " ".join(sys.argv),
        "config": {n: model_config(n, args.seed) for n in (1, 2)},
        "steps": args.steps,
        "batch": args.batch,
        "train_seconds": wall,
        "probe": {"seq_len": PROBE_SEQ_LEN, "batch": 64, "seed": args.seed + 1},
        "losses": {n: r["losses"] for n, r in results.items()},
        "max_induction": {n: float(r["scores"].induction.max()) for n, r in results.items()},
        "expectations": expectations(results),
        "scores": scores.to_dict("records"),
        "curves": curves.to_dict("records"),
    }
    (args.out / "induction_needs_two_layers.json").write_text(json.dumps(summary, indent=1))

    pd.set_option("display.width", 120)
    print(f"\nper-head scores on [BOS] A A (|A| = {PROBE_SEQ_LEN}); *_ablation_delta: rise of the "
          "second-copy loss with that head alone ablated")  # fmt: skip
    print(scores.round(3).to_string(index=False))
    for n, r in results.items():
        print(
            f"{n}L: first-copy loss {r['losses']['first_copy_loss']:.3f}  second-copy loss "
            f"{r['losses']['second_copy_loss']:.3f}  max induction "
            f"{summary['max_induction'][n]:.3f}  trained in {wall[n]:.0f}s"
        )
    for claim, holds in summary["expectations"].items():
        print(f"{'holds' if holds else 'FAILS'}: {claim}")
    if args.quick:
        print(f"(--quick trains {args.steps} steps: a smoke test, too short for the claims)")
    print(f"wrote {args.out} and {weights}/attn-only-{{1l,2l}}")


if __name__ == "__main__":
    run_script(main)
