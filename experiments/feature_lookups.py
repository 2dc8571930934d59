"""Which features of the shipped SAE carry the answer, and does ablating them matter?

Prompts: "The capital of France is" (answer " Paris") and the needle prompt "The password is
7391. Remember the password. The password is" (answer: the model's top token, its first digit).
The answer is the model's own top-1 token at the last position.

Features at the last position of blocks.15.hook_resid_pre (the shipped dictionary's hook) are
ranked by their direct effect on the answer logit: activation x (decoder row . u), where u is
the answer's unembedding column through the final norm with its scale frozen at the real final
residual (interp.analysis.attribution's readout direction). This is the effect of the feature
if nothing between block 15 and the unembedding reacted to it; the ablation measures the real one.

Claim tested: zeroing the top feature (by direct effect; ablate_features, the SAE's error term
kept) lowers log p(answer) more than zeroing any of N_RANDOM control features active at the same
position with the nearest firing density (density on held-out corpus text). Held when the top
feature's drop exceeds the controls' mean + 2 standard deviations.

    python experiments/feature_lookups.py
    python experiments/feature_lookups.py --quick --out /tmp/lookups.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_sae  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis.attribution import final_norm, readout_direction  # noqa: E402
from interp.files import save_figure  # noqa: E402
from interp.runs.features import ablate_features  # noqa: E402

PROMPTS = {
    "capital": "The capital of France is",
    "needle": "The password is 7391. Remember the password. The password is",
}
SAE = "smollm2-135m-res-topk"
N_RANDOM = 8


def direct_effects(acts: torch.Tensor, W_dec: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[d_sae] each feature's activation times its decoder row's projection on u."""
    return acts.double() * (W_dec.double() @ u.double())


def controls(active: torch.Tensor, density: torch.Tensor, top: int, n: int) -> list[int]:
    """The n active features (other than top) whose density is nearest top's, in log space."""
    others = [int(f) for f in active if int(f) != top]
    gap = {f: abs(float((density[f] + 1e-6).log() - (density[top] + 1e-6).log())) for f in others}
    return sorted(others, key=lambda f: (gap[f], f))[:n]


def answer_stats(model, tokens, answer: int, hooks) -> tuple[float, int]:
    """(log p(answer), its rank) at the last position under `hooks`."""
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)[0, -1].float()
    logp = logits.log_softmax(-1)
    return float(logp[answer]), int((logits > logits[answer]).sum())


def main() -> None:
    parser = scripts.parser(__doc__, "feature_lookups", model="smollm2-135m",
                            seed_help="draws the held-out windows for the densities")  # fmt: skip
    parser.add_argument("--features", default=SAE, help="the dictionary (a name or directory)")
    args = parser.parse_args()
    model = scripts.start(args)
    sae = interp.features.load(args.features)
    n_windows = 4 if args.quick else 32
    held = train_sae.windows(model.tokenizer, train_sae.held_out(), n_windows, args.seed)
    density = (sae.encode(train_sae.collect(model, held)) > 0).float().mean(0)
    norm = final_norm(model)
    W_U = model.W_U.detach().float().cpu()
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    fig, axes = plt.subplots(1, len(PROMPTS), figsize=(11, 4))
    print(f"dictionary {sae.name}: {sae.describe()}; densities on {held.numel()} held-out tokens")
    for ax, (name, prompt) in zip(axes, PROMPTS.items(), strict=True):
        tokens = model.to_tokens(prompt)
        trace = interp.trace(model, prompt, capture=[sae.hook_in, last])
        x, final = trace.tensor(sae.hook_in, 0)[-1], trace.tensor(last, 0)[-1]
        with torch.no_grad():
            answer = int(model(tokens)[0, -1].argmax())
        base_logp, base_rank = answer_stats(model, tokens, answer, [])
        u, _ = readout_direction(final.double(), norm, W_U[:, answer].double())
        acts = sae.encode(x)
        effect = direct_effects(acts, sae.W_dec, u)
        active = acts.nonzero().flatten()
        order = sorted(active.tolist(), key=lambda f: -float(effect[f]))
        top = order[0]
        word = model.tokenizer.decode([answer])
        print(f"\n{name}: {prompt!r} -> {word!r} (log p {base_logp:.3f}, rank {base_rank})")
        print("feature  activation  direct_effect  density")
        for f in order[:5]:
            print(
                f"{f:7d}  {float(acts[f]):10.3f}  {float(effect[f]):13.3f}  {float(density[f]):.4f}"
            )
        drop = {}
        for f in [top, *controls(active, density, top, N_RANDOM)]:
            logp, rank = answer_stats(model, tokens, answer, ablate_features(sae, [f]))
            drop[f] = (base_logp - logp, rank)
        ctrl = torch.tensor([d for f, (d, _) in drop.items() if f != top])
        mean, std = float(ctrl.mean()), float(ctrl.std()) if len(ctrl) > 1 else 0.0
        held_ = drop[top][0] > mean + 2 * std
        print(f"ablate top feature {top}: log p drops {drop[top][0]:.3f}, rank {drop[top][1]}; "
              f"{len(ctrl)} density-matched controls: drop {mean:.3f} +- {std:.3f} "
              f"(max {float(ctrl.max()):.3f})")  # fmt: skip
        print(f"claim ({name}): {'held' if held_ else 'not held'}")
        ax.bar(range(len(drop)), [d for d, _ in drop.values()],
               color=["C3"] + ["C0"] * (len(drop) - 1))  # fmt: skip
        ax.set_xticks(range(len(drop)), [str(f) for f in drop], rotation=60, fontsize=7)
        ax.set_title(f"{name}: ablate -> drop in log p({word!r})", fontsize=9)
        ax.set_xlabel("feature (red: top direct effect; blue: density-matched controls)")
    save_figure(fig, args.out)


if __name__ == "__main__":
    scripts.run_script(main)
