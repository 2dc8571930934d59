"""Does order appear after the Mamba blocks? A linear probe for token position in tiny-hybrid.

tiny-hybrid (Nemotron-H class) adds no positional encoding anywhere: no position embedding, no
RoPE. The seed says the Mamba2 blocks carry sequence order by themselves. A ridge probe
(closed form, features standardised on the training split) reads the token's position from
the residual stream after each layer (`blocks.{l}.hook_resid_post`, taken from transformers'
`output_hidden_states`; the embedding row is `hook_embed`), on held-out windows of every
domain, split by window: even windows train the probe, odd windows test it. Position 0 (the
BOS) is left out, so a probe cannot score by spotting the BOS token. R² on the test windows.

Control: the same model with each Mamba2 layer replaced by attention (no positional encoding
either), trained the same way (train_tiny_hybrid.py --control attention; shipped in
experiments/controls/; another seed is trained on first use into reports/controls/). Causal
attention alone can still count (a token attending uniformly sees 1/(position+1) of the BOS),
so the control says how much of the order the Mamba blocks add.

Held if the probe reads position with R² >= 0.5 right after the first Mamba2 layer while the
embeddings give R² < 0.1.

    python experiments/position_without_encoding.py [--windows 32] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lm_training import trained  # noqa: E402
from train_tiny_hybrid import CONTROLS  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from interp.corpus import DOMAINS, held_out_windows  # noqa: E402
from interp.files import save_figure  # noqa: E402
from interp.models.zoo import ZOO  # noqa: E402
from interp.scripts import run_script  # noqa: E402

SEQ_LEN = 64
RIDGE = 1.0
# NemotronHConfig.layers_block_type spells the layer kinds its own way.
KIND = {"linear_attention": "mamba2", "full_attention": "attention", "moe": "moe", "mlp": "mlp"}
SHORT = {"mamba2": "M", "attention": "*", "moe": "E", "mlp": "-"}


def residuals(path: Path, windows: int) -> tuple[list[str], torch.Tensor, list[str]]:
    """Layer names, residual streams [layer+1, window, pos, d] and the layer types."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    x = torch.cat([held_out_windows(tokenizer, d, SEQ_LEN, windows) for d in DOMAINS])
    with torch.no_grad():
        hidden = model(input_ids=x, output_hidden_states=True).hidden_states
    kinds = [KIND[k] for k in model.config.layers_block_type]
    # hidden_states: the embeddings, then every layer's output; transformers applies the final
    # norm to the last one, so that row is resid_post of the last layer after norm_f.
    names = ["hook_embed"] + [f"blocks.{i}.hook_resid_post" for i in range(len(kinds))]
    return names, torch.stack(hidden[: len(names)]), kinds


def probe_r2(resid: torch.Tensor) -> float:
    """Ridge from resid [window, pos, d] to the position; R² on the odd windows."""
    pos = torch.arange(resid.shape[1], dtype=torch.float64)[1:].expand(resid.shape[0], -1)
    feats = resid[:, 1:].double()
    train, test = slice(0, None, 2), slice(1, None, 2)
    xt, yt = feats[train].flatten(0, 1), pos[train].flatten()
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt = torch.cat([(xt - mu) / sd, torch.ones(len(xt), 1, dtype=xt.dtype)], 1)
    w = torch.linalg.solve(xt.T @ xt + RIDGE * torch.eye(xt.shape[1], dtype=xt.dtype), xt.T @ yt)
    xs, ys = feats[test].flatten(0, 1), pos[test].flatten()
    pred = torch.cat([(xs - mu) / sd, torch.ones(len(xs), 1, dtype=xs.dtype)], 1) @ w
    return float(1 - ((pred - ys) ** 2).sum() / ((ys - ys.mean()) ** 2).sum())


def run(args: argparse.Namespace) -> None:
    windows = 4 if args.quick else args.windows
    models = {
        "tiny-hybrid": ZOO["tiny-hybrid"].path(),
        "attention control": trained(CONTROLS["attention"], args.seed, args.quick),
    }
    table = {}
    for label, path in models.items():
        names, resid, kinds = residuals(path, windows)
        table[label] = (kinds, [probe_r2(r) for r in resid])
    print(f"R² of a ridge probe for position (1..{SEQ_LEN - 1}), held-out windows, "
          f"{windows} per domain")  # fmt: skip
    print(f"{'hook':28s}" + "".join(f"{label:>26s}" for label in table))
    for i, name in enumerate(names):
        cells = []
        for kinds, r2 in table.values():
            kind = "embed" if i == 0 else kinds[i - 1]
            cells.append(f"{kind:>12s} {r2[i]:>13.3f}")
        print(f"{name:28s}" + "".join(cells))
    kinds, r2 = table["tiny-hybrid"]
    first = 1 + kinds.index("mamba2")
    held = r2[first] >= 0.5 and r2[0] < 0.1
    control = table["attention control"][1][first]
    print(f"{'held' if held else 'not held'}: after the first Mamba2 layer R² = {r2[first]:.3f}"
          f" (embeddings {r2[0]:.3f}; the attention control at that depth {control:.3f}, "
          f"at its last layer {table['attention control'][1][-1]:.3f})")  # fmt: skip

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (_, r2) in table.items():
        ax.plot(range(len(r2)), r2, marker="o", label=label)
    ax.set_xticks(range(len(names)), ["embed"] + [
        f"{i}:{SHORT[k]}" for i, k in enumerate(table["tiny-hybrid"][0])
    ])  # fmt: skip
    ax.set(xlabel="after layer (M mamba2, E moe, * attention)", ylabel="position probe R²",
           title="Position from the residual stream, no positional encoding")  # fmt: skip
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, args.out, dpi=120)
    print(f"figure: {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--windows", type=int, default=32, help="held-out windows per domain")
    parser.add_argument("--seed", type=int, default=0, help="the control's training seed")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--out", type=Path, default=Path("reports/position_without_encoding.png"))
    run(parser.parse_args())


if __name__ == "__main__":
    run_script(main)
