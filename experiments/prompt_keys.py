"""Prompt keys: a prompt can only draw on knowledge whose keys it contains.

Each question is asked twice: vaguely (the answer is implied but its keys are missing) and
with the domain's terms in the prompt. For each version: the log-probability of the answer's
first token, the entropy of the next-token distribution, and prompt-key coverage (how much of
the prompt the predicting position reads). The claim holds if the term-rich prompts make the
answer much more likely in most questions, not in one anecdote.

    python experiments/prompt_keys.py [--model smollm2-135m] [--quick] [--out FILE.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp.analysis.coverage import coverage  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.files import run_script, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# (vague, term-rich, answer): the same question; only the rich one names the keys.
QUESTIONS = [
    ("The main city of the country is",
     "The capital city of France, home of the Eiffel Tower and the Louvre, is", " Paris"),
    ("The symbol for that metal is",
     "In chemistry, the element gold has the chemical symbol", " Au"),
    ("The largest one is",
     "The largest planet of our solar system, the gas giant, is", " Jupiter"),
    ("He wrote the play, and his name was William",
     "The tragedy Hamlet was written by the English playwright William", " Shakespeare"),
    ("The theory was developed by Albert",
     "The theory of relativity in physics was developed by Albert", " Einstein"),
    ("The language they speak there is",
     "In Spain, from Madrid to Seville, the official language people speak is", " Spanish"),
    ("The opposite of it is",
     "In English, the opposite of the word hot is", " cold"),
    ("The colour of it is",
     "On a clear sunny day, the colour of the sky is", " blue"),
    ("The first person to walk there was Neil",
     "The first person to walk on the Moon, in the Apollo 11 mission, was Neil", " Armstrong"),
    ("The money used there is the",
     "In Japan, shops in Tokyo price goods in the Japanese currency, the", " yen"),
    ("The answer to the sum is",
     "In arithmetic, two plus three equals", " five"),
    ("The animal that makes it is the",
     "Honey is made from flower nectar by the insect called the", " bee"),
]  # fmt: skip


def measure(model, prompts: list[str], answers: list[str]) -> pd.DataFrame:
    """Per prompt: log p of the answer's first token, next-token entropy, coverage."""
    tok = model.tokenizer
    trace = interp.trace(model, prompts, capture=("attention",))
    cov = coverage(trace.query_attention, trace.tokens, bos_id=tok.bos_token_id).summary
    rows = []
    for p, answer in enumerate(answers):
        answer_id = tok(answer, add_special_tokens=False)["input_ids"][0]
        logp = trace.records[p].query_logits[-1].float().log_softmax(-1)
        rows.append({"logprob": float(logp[answer_id]),
                     "entropy": float(-(logp.exp() * logp).sum()),
                     "top1": tok.decode([int(logp.argmax())]),
                     "rank": int((logp > logp[answer_id]).sum())})  # fmt: skip
    out = pd.DataFrame(rows)
    out["coverage"] = cov["coverage"].to_numpy()
    out["effective_coverage"] = cov["effective_coverage"].to_numpy()
    return out


def plot(table: pd.DataFrame, title: str, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric in zip(axes, ["logprob", "entropy", "effective_coverage"], strict=True):
        for v, r in zip(table[f"vague_{metric}"], table[f"rich_{metric}"], strict=True):
            ax.plot([0, 1], [v, r], "o-", color="0.6", lw=1)
        ax.plot([0, 1], [table[f"vague_{metric}"].median(), table[f"rich_{metric}"].median()],
                "s-", color="k", lw=2, label="median")  # fmt: skip
        ax.set(xticks=[0, 1], xticklabels=["vague", "term-rich"], title=metric, xlim=(-0.3, 1.3))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--seed", type=int, default=0, help="unused: greedy and deterministic")
    parser.add_argument("--quick", action="store_true", help="three questions")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "prompt_keys.png")
    args = parser.parse_args()
    print(f"seed {args.seed}; command: {' '.join(sys.argv)}")
    torch.set_grad_enabled(False)
    model = interp.load(args.model)
    if model.tokenizer is None:
        raise InterpError(f"{args.model} has no tokenizer: it takes token ids, not text")
    questions = QUESTIONS[:3] if args.quick else QUESTIONS
    vague, rich, answers = (list(column) for column in zip(*questions, strict=True))
    both = [measure(model, prompts, answers).add_prefix(f"{kind}_")
            for kind, prompts in (("vague", vague), ("rich", rich))]  # fmt: skip
    table = pd.concat(both, axis=1).assign(answer=answers)
    table["gain"] = table.rich_logprob - table.vague_logprob
    shown = table[["answer", "vague_logprob", "rich_logprob", "gain", "vague_rank", "rich_rank",
                   "vague_entropy", "rich_entropy", "vague_effective_coverage",
                   "rich_effective_coverage", "vague_top1", "rich_top1"]]  # fmt: skip
    print(f"\n{len(table)} questions on {args.model}: log p of the answer's first token (nats), "
          "its rank, next-token entropy (nats), effective coverage of the prompt")  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(shown.to_string(index=False, float_format="{:.2f}".format))
    q1, median, q3 = np.percentile(table.gain, [25, 50, 75])
    improved = int((table.gain > 0).sum())
    print(f"\ngain in log p (rich - vague): median {median:.2f} nats, IQR [{q1:.2f}, {q3:.2f}]; "
          f"improved in {improved} of {len(table)}")  # fmt: skip
    top1 = {kind: int((table[f"{kind}_rank"] == 0).sum()) for kind in ("vague", "rich")}
    print(f"entropy: median vague {table.vague_entropy.median():.2f} vs rich "
          f"{table.rich_entropy.median():.2f} nats; answer top-1: vague {top1['vague']}, "
          f"rich {top1['rich']}")  # fmt: skip
    holds = improved >= 0.75 * len(table) and median > 1.0
    print(f"claim 'a prompt only draws on knowledge whose keys it contains' held: {holds} "
          "(needs >= 75% of questions improved and a median gain > 1 nat)")  # fmt: skip
    plot(table, f"{args.model}: vague vs term-rich prompts ({len(table)} questions)", args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
