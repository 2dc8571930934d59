"""One token's journey: follow the last prompt token through every layer, then watch its keys
and values wait in the KV cache while the model generates.

Through the layers (position = the last prompt token, whose stream becomes the first prediction),
read by the shared analyses `interp.analysis.journey` and `interp.analysis.lens`:
- the residual stream's norm after each layer, the sizes of what attention and the MLP write into
  it, and the prompt tokens its heads draw from;
- the logit lens: the final norm + unembedding applied to the stream after each layer, its top
  guesses, and the probability and rank there of the token the model finally predicts.

Through generation: after each generated token, the bytes the KV cache holds (the model's 3 KV
heads) against what full multi-head attention (9 KV heads) would hold, the bytes the Hugging Face
cache object really holds, and the attention the new query still pays to the followed token.

    python experiments/token_journey.py
    python experiments/token_journey.py --quick --out /tmp/journey.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis.journey import format_journey, journey  # noqa: E402
from interp.analysis.lens import decision_depth, logit_lens  # noqa: E402
from interp.files import save_figure  # noqa: E402
from interp.text import decode, token_texts  # noqa: E402


def layer_table(trace, pos: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(journey frame, its layer rows with the lens's p / rank of the final prediction, the
    lens decision depth) at `pos`."""
    steps = journey(trace, position=pos)
    final = int(trace.records[0].query_logits[0].argmax())  # the model's own next-token choice
    _, lens = logit_lens(trace, k=1, target=final)
    at_pos = lens[lens["pos"] == pos].set_index("layer")
    layers = steps[steps["stage"] == "layer"].set_index("layer")
    layers = layers.join(at_pos[["prob", "rank"]].rename(columns=lambda c: f"final_{c}"))
    depth = decision_depth(lens).set_index("pos").loc[pos, "depth"]
    return steps, layers.reset_index(), int(depth)


def cache_table(trace, pos: int) -> pd.DataFrame:
    """Per generated step: cache bytes vs MHA, and attention the new query pays to `pos`."""
    kv = trace.kv_cache[["step", "positions", "bytes", "mha_bytes", "measured_bytes"]].copy()
    rows = trace.query_attention
    # The query at position n is the token fed at step n - n_prompt + 1 (its K/V join the cache).
    on_token = rows[rows["key"] == pos].groupby("query")["weight"].mean()
    kv["attn_to_token"] = [on_token.get(p - 1, float("nan")) for p in kv["positions"]]
    kv["ratio"] = kv["mha_bytes"] / kv["bytes"]
    return kv


def plot(layers: pd.DataFrame, kv: pd.DataFrame, title: str, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    ax.plot(layers["layer"], layers["resid_norm"], label="residual stream (after layer)")
    ax.plot(layers["layer"], layers["attn_write"], label="attention write")
    ax.plot(layers["layer"], layers["mlp_write"], label="MLP write")
    ax.set(xlabel="layer", ylabel="L2 norm", yscale="log", title="sizes along the stream")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.plot(layers["layer"], layers["final_prob"], "o-", ms=3, label="p(final prediction)")
    ax.plot(layers["layer"], layers["top1_prob"], ".:", label="p(lens top guess)")
    # Label the layers where the lens changes its mind, so the figure reads as a story.
    changed = layers["top1"] != layers["top1"].shift()
    for _, row in layers[changed].iterrows():
        ax.annotate(row["top1"], (row["layer"], row["top1_prob"]), fontsize=7, rotation=45)
    ax.set(xlabel="layer", ylabel="probability", title="logit lens at the followed token")
    ax.legend(fontsize=8, loc="center left")

    ax = axes[2]
    ax.plot(
        kv["positions"], kv["measured_bytes"] / 1024, "o-", ms=3, label="KV cache (GQA, measured)"
    )
    ax.plot(kv["positions"], kv["mha_bytes"] / 1024, "s--", ms=3, label="same with full MHA")
    ax.set(xlabel="positions in cache", ylabel="KiB", title="the KV cache as the model generates")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main() -> None:
    parser = scripts.parser(
        __doc__,
        "token_journey",
        model="smollm2-135m",
        seed_help="sampling seed (unused when greedy)",
    )
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = parser.parse_args()
    if args.quick:
        args.new_tokens = min(args.new_tokens, 4)

    model = scripts.start(args)
    sampling = interp.Sampling(temperature=args.temperature, seed=args.seed)
    trace = interp.trace(
        model,
        args.prompt,
        max_new_tokens=args.new_tokens,
        sampling=sampling,
        capture=("residual", "attention"),
    )
    record = trace.records[0]
    pos = record.n_prompt - 1
    followed = token_texts(trace.tokenizer, [record.ids[pos]])[0]
    continuation = decode(trace.tokenizer, record.ids[record.n_prompt :])
    print(f"prompt {args.prompt!r} -> continuation {continuation!r}")
    print(f"following token {followed!r} at position {pos}")

    steps, layers, depth = layer_table(trace, pos)
    print()
    print(format_journey(steps))
    final = steps["top1"].iloc[-1]
    ranks = " ".join(f"{int(r)}" for r in layers["final_rank"])
    print(f"\nrank of {final!r} in the lens after layers 0..{len(layers) - 1}: {ranks}")
    growth = layers["resid_norm"].iloc[-1] / layers["resid_norm"].iloc[0]
    print(f"lens decision depth: layer {depth} of {len(layers) - 1}; stream norm grows "
          f"{growth:.1f}x from layer 0 to the last layer")  # fmt: skip

    kv = cache_table(trace, pos)
    print("\nthrough generation (cache after each fed token):")
    print(kv.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    per_position = (kv["bytes"].diff() // kv["positions"].diff()).dropna().astype(int).unique()
    exact = bool((kv["measured_bytes"] == kv["bytes"]).all())
    print(f"cache grows {per_position.tolist()} bytes per position; MHA would hold "
          f"{kv['ratio'].iloc[-1]:.1f}x as much; measured == predicted: {exact}")  # fmt: skip

    title = f"{trace.meta['model']}: {followed!r} in {args.prompt!r} (seed {args.seed})"
    plot(layers, kv, title, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    scripts.run_script(main)
