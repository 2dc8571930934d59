"""Delayed feedback ("speech jammer"): a model that hears its own output late stumbles.

People who hear their own voice delayed by a fraction of a second stutter, repeat and slow down,
because speaking is autoregressive: each syllable is planned from what was heard so far. A
language model is autoregressive by construction, so we delay its feedback and measure.

Construction (greedy decoding, delay d tokens, steps t = 1..N, prompt P):

    heard_t = P + y_1 .. y_{t-1-d}          (outputs older than d steps; none while t <= d + 1)
    p_t     = the model's next-token distribution after heard_t
    y_t     = argmax p_t                     (what it says at step t)

So the d most recent outputs are still "in flight": they are said but not yet heard, and the model
plans step t from a context that lags d tokens behind its own speech. Every token it hears sits at
its true position; nothing is masked or invented. d = 0 is ordinary greedy generation, whose output
c_1 .. c_N is "what the model meant to say". Because the first d + 1 steps hear only the prompt,
greedy decoding says c_1 d + 1 times: the onset stutter is part of the construction (as it is for
a person: with nothing new heard, the plan does not move on).

Disruption, per prompt and d (the spread is over prompts):
- loss:    mean_t -log p_t(c_t), nats: how much the jammed speaker still expects to say what it
           meant to say at that step (d = 0 gives the floor: the model's confidence in its output);
- rep-2:   fraction of output bigrams that repeat an earlier bigram of the same output;
- stutter: fraction of steps that repeat the previous output token (y_t == y_{t-1});
           rep-2 and stutter skip the forced onset (they read y_{d+1} .. y_N), so they count only
           the stumbling the model does after it has started hearing itself;
- entropy: mean_t entropy of p_t, nats.
Claim tested: all four grow with d.

Prompts: the opening 16 tokens of prose paragraphs from Python's own help text
(`pydoc_data.topics`), drawn with --seed, so no prompt is hand-picked.

    python experiments/delayed_feedback.py
    python experiments/delayed_feedback.py --quick --out /tmp/delayed_feedback.png
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.files import save_figure  # noqa: E402

DELAYS = (0, 1, 2, 4)
PROMPT_TOKENS = 16
METRICS = ("loss", "rep2", "stutter", "entropy")


def prose_prompts(tokenizer, n: int, seed: int) -> list[torch.Tensor]:
    """The first PROMPT_TOKENS tokens of `n` random prose paragraphs of the pydoc topics."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            # Unindented, long, no markup underlines: running prose rather than code or headings.
            if block[:1].isalpha() and len(block) > 200 and not re.search(r"[*=~-]{4}", block):
                paragraphs.append(" ".join(block.split()))
    chosen = random.Random(seed).sample(paragraphs, n)
    return [
        tokenizer(p, add_special_tokens=False, return_tensors="pt")["input_ids"][0, :PROMPT_TOKENS]
        for p in chosen
    ]


def jammed_outputs(model, prompt: torch.Tensor, steps: int, d: int) -> list[int]:
    """y_1 .. y_steps under delay d. The heard context only ever grows by one token at the end,
    so the model's own KV cache serves it: one single-token forward per heard output."""
    logits, past = model(prompt[None], return_type="logits_and_cache", use_cache=True)
    said: list[int] = []
    for t in range(1, steps + 1):
        if t - 1 - d > 0:  # y_{t-1-d} arrives now
            heard = torch.tensor([[said[t - 2 - d]]])
            logits, past = model(heard, return_type="logits_and_cache", past_key_values=past)
        said.append(int(logits[0, -1].argmax()))
    return said


def jammed_runs(model, prompts: list[torch.Tensor], steps: int) -> dict:
    """{(prompt index, d): (outputs [steps], logits p_t [steps, vocab])}.

    The distributions are read from one batched trace of every final heard context (prompt +
    y_1 .. y_{steps-1-d}): p_t is the readout of the last residual row at the context's position
    n_prompt - 1 + max(0, t - 1 - d). Their argmax must reproduce the cached generation.
    """
    pairs = [(i, d) for i in range(len(prompts)) for d in DELAYS]
    said = {(i, d): jammed_outputs(model, prompts[i], steps, d) for i, d in pairs}
    heard = [
        torch.cat([prompts[i], torch.tensor(said[i, d][: max(0, steps - 1 - d)], dtype=torch.long)])
        for i, d in pairs
    ]
    trace = interp.trace(model, heard, capture=("residual",))
    runs = {}
    for k, (i, d) in enumerate(pairs):
        rows = [len(prompts[i]) - 1 + max(0, t - 1 - d) for t in range(1, steps + 1)]
        logits = trace.readout(trace.tensor("resid", k)[-1, rows]).float()
        outputs = torch.tensor(said[i, d])
        if not torch.equal(logits.argmax(-1), outputs):
            raise RuntimeError(f"prompt {i}, d={d}: cached generation and trace disagree")
        runs[i, d] = outputs, logits
    return runs


def disruption(said: torch.Tensor, logits: torch.Tensor, meant: torch.Tensor, d: int) -> dict:
    logp = logits.log_softmax(-1)
    spoken = said[d:]  # y_1 .. y_{d+1} are equal by construction; keep only the last of them
    bigrams = list(zip(spoken[:-1].tolist(), spoken[1:].tolist()))
    return {
        "loss": float(-logp.gather(-1, meant[:, None]).mean()),
        "rep2": 1 - len(set(bigrams)) / len(bigrams),
        "stutter": float((spoken[1:] == spoken[:-1]).float().mean()),
        "entropy": float(-(logp.exp() * logp).sum(-1).mean()),
    }


def plot(per_prompt: pd.DataFrame, summary: pd.DataFrame, title: str, out: Path) -> None:
    labels = {
        "loss": "loss of the d=0 continuation (nats)",
        "rep2": "repeated bigrams (fraction)",
        "stutter": "immediate token repeats (fraction)",
        "entropy": "next-token entropy (nats)",
    }
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.8))
    for ax, metric in zip(axes, METRICS):
        for _, rows in per_prompt.groupby("prompt"):
            ax.plot(rows["d"], rows[metric], color="0.75", lw=1)
        ax.errorbar(
            summary["d"], summary[(metric, "mean")], yerr=summary[(metric, "std")],
            color="k", marker="o", capsize=3, label="mean ± sd over prompts",
        )  # fmt: skip
        ax.set(xlabel="feedback delay d (tokens)", title=labels[metric], xticks=list(DELAYS))
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main() -> None:
    parser = scripts.parser(
        __doc__, "delayed_feedback", model="smollm2-135m", seed_help="picks the prompts"
    )
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="tokens generated per run")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.steps = 5, 8

    model = scripts.start(args)
    tok = model.tokenizer
    prompts = prose_prompts(tok, args.prompts, args.seed)
    runs = jammed_runs(model, prompts, args.steps)

    rows = []
    for (i, d), (said, logits) in runs.items():
        meant = runs[i, 0][0]
        rows.append({"prompt": i, "d": d, **disruption(said, logits, meant, d)})
    per_prompt = pd.DataFrame(rows)
    summary = per_prompt.groupby("d")[list(METRICS)].agg(["mean", "std", "min", "max"])
    summary = summary.reset_index()

    print(f"\n{args.prompts} prompts x {args.steps} greedy steps; first prompt, per delay:")
    print(f"  prompt: {tok.decode(prompts[0])!r}")
    for d in DELAYS:
        print(f"  d={d}: {tok.decode(runs[0, d][0])!r}")
    print("\ndisruption vs delay (mean ± sd over prompts, [min, max]):")
    table = pd.DataFrame(
        {
            m: [
                f"{row[(m, 'mean')]:.3f} ± {row[(m, 'std')]:.3f} "
                f"[{row[(m, 'min')]:.2f}, {row[(m, 'max')]:.2f}]"
                for _, row in summary.iterrows()
            ]
            for m in METRICS
        },
        index=pd.Index(DELAYS, name="d"),
    )
    print(table.to_string())
    for metric in METRICS:
        means = summary[(metric, "mean")]
        print(f"{metric}: grows with every step of d: {bool(means.diff().dropna().gt(0).all())}")

    title = f"{args.model}: delayed feedback, {args.prompts} prompts (seed {args.seed})"
    plot(per_prompt, summary, title, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    scripts.run_script(main)
