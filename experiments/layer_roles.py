"""Layer roles: at what depth does the logit lens settle on the model's prediction, by token kind?

A common picture of a transformer: early layers settle the surface of the text (punctuation,
function words, the rest of a half-written word) and later layers the tokens that need meaning
(content words, numbers). We test it on a few hundred tokens of real English.

Decision depth at a position (`interp.analysis.lens.decision_depth`): apply the final norm +
unembedding (the logit lens) to the residual stream after each layer 0 .. L-1; the depth is the
first layer from which the lens's top-1 token equals the model's final top-1 and stays equal
through the last layer. 0 = settled after the first layer, L-1 = only the last layer settles it.

Token kind of the predicted token (the final top-1), by a rule on its text, first match wins:
- number:      digits only (SmolLM2 writes numbers one digit per token);
- punctuation: no letter or digit (this includes whitespace and newlines);
- word piece:  starts with a letter and the current token ends with a letter or digit, so the
               two join into one word (e.g. "interpre" -> "ter");
- function:    a closed-class English word (FUNCTION_WORDS: articles, pronouns, prepositions,
               conjunctions, auxiliaries, determiners);
- content:     every other word.
Claim tested: punctuation and function words have smaller median depths than content words and
numbers. The same medians over only the positions where the prediction equals the text's next
token check that the result is not an artefact of wrong guesses.

Text: prose paragraphs of Python's own help text (`pydoc_data.topics`), drawn with --seed,
joined and cut into windows.

    python experiments/layer_roles.py
    python experiments/layer_roles.py --quick --out /tmp/layer_roles.png
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis.lens import decision_depth, logit_lens  # noqa: E402
from interp.files import save_figure  # noqa: E402

MIN_COUNT = 20  # below this many positions a kind's median is flagged as noisy
KINDS = ("punctuation", "function", "word piece", "content", "number")
FUNCTION_WORDS = set(
    """a an the this that these those some any each every no all both either neither
    i you he she it we they me him her us them my your his its our their mine yours what which
    who whom whose there here
    of in on at by for with from to into onto over under about above below between through
    during before after since until than as like via per without within upon against among
    and or but nor so yet if then else when while because although though whether unless
    is are was were be been being am do does did done have has had having will would shall
    should can could may might must not""".split()
)


def prose_windows(tokenizer, n_windows: int, length: int, seed: int) -> torch.Tensor:
    """[n_windows, length] token ids of random pydoc prose paragraphs, joined by blank lines."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        for block in topics[name].split("\n\n"):
            # Unindented, long, no markup underlines: running prose rather than code or headings.
            if block[:1].isalpha() and len(block) > 200 and not re.search(r"[*=~-]{4}", block):
                paragraphs.append(" ".join(block.split()))
    random.Random(seed).shuffle(paragraphs)
    ids: list[int] = []
    for paragraph in paragraphs:
        ids += tokenizer(paragraph + "\n\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n_windows * length:
            break
    return torch.tensor(ids[: n_windows * length]).view(n_windows, length)


def kind_of(predicted: str, current: str) -> str:
    word = predicted.strip()
    if word.isdigit():
        return "number"
    if not any(c.isalnum() for c in word):
        return "punctuation"
    if predicted[:1].isalpha() and current[-1:].isalnum():
        return "word piece"
    return "function" if word.lower() in FUNCTION_WORDS else "content"


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    groups = frame.groupby("kind")["depth"]
    table = pd.DataFrame(
        {
            "count": groups.size(),
            "median": groups.median(),
            "q25": groups.quantile(0.25),
            "q75": groups.quantile(0.75),
            "mean": groups.mean(),
        }
    )
    return table.reindex([k for k in KINDS if k in table.index])


def plot(frame: pd.DataFrame, n_layers: int, title: str, out: Path) -> None:
    kinds = [k for k in KINDS if k in set(frame["kind"])]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    ax = axes[0]
    data = [frame.loc[frame["kind"] == k, "depth"] for k in kinds]
    ax.boxplot(data, showfliers=False)
    for i, values in enumerate(data, start=1):
        jitter = np.random.default_rng(i).uniform(-0.2, 0.2, len(values))
        ax.scatter(i + jitter, values, s=5, alpha=0.3)
    ax.set_xticks(range(1, len(kinds) + 1), [f"{k}\n(n={len(v)})" for k, v in zip(kinds, data)])
    ax.set(ylabel="decision depth (layer)", title="logit-lens decision depth by predicted kind")

    ax = axes[1]
    layers = np.arange(n_layers)
    for kind, values in zip(kinds, data):
        settled = [(values <= layer).mean() for layer in layers]
        ax.step(layers, settled, where="post", label=kind)
    ax.set(xlabel="layer", ylabel="fraction of positions settled", title="settled by layer")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def main() -> None:
    parser = scripts.parser(
        __doc__, "layer_roles", model="smollm2-135m", seed_help="picks the paragraphs"
    )
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="tokens per window")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.length = 1, 48

    model = scripts.start(args)
    tok = model.tokenizer
    windows = prose_windows(tok, args.windows, args.length, args.seed)
    trace = interp.trace(model, windows, capture=("residual",))

    rows = []
    for w, ids in enumerate(windows):
        depths = decision_depth(logit_lens(trace, prompt=w, k=1)[1]).set_index("pos")
        # The last position has no next token to check the prediction against; leave it out.
        for pos in range(len(ids) - 1):
            final = int(depths.loc[pos, "final_id"])
            predicted, current = tok.decode([final]), tok.decode([int(ids[pos])])
            rows.append({"window": w, "pos": pos, "predicted": predicted,
                         "kind": kind_of(predicted, current),
                         "depth": int(depths.loc[pos, "depth"]),
                         "correct": final == int(ids[pos + 1])})  # fmt: skip
    frame = pd.DataFrame(rows)
    n_layers = model.cfg.n_layers

    print(f"\n{len(frame)} positions ({args.windows} windows x {args.length - 1} predictions); "
          f"depth 0 = after the first layer, {n_layers - 1} = only the last layer")  # fmt: skip
    table = summarise(frame)
    table["iqr"] = table["q75"] - table["q25"]
    table["correct_frac"] = frame.groupby("kind")["correct"].mean()
    table["median_if_correct"] = frame[frame["correct"]].groupby("kind")["depth"].median()
    print(table.round(2).to_string())
    for kind in table.index:
        common = frame.loc[frame["kind"] == kind, "predicted"].value_counts().head(6)
        print(f"  {kind}: most predicted " + ", ".join(repr(t) for t in common.index))

    medians, correct = table["median"], table["median_if_correct"]
    for label, m in [("all positions", medians), ("correct predictions", correct)]:
        surface = m.reindex(["punctuation", "function"]).dropna()
        deep = m.reindex(["content", "number"]).dropna()
        holds = bool(len(surface) and len(deep) and surface.max() < deep.min())
        print(f"claim (punctuation, function settle before content, number) on {label}: {holds}")

    few = table.index[table["count"] < MIN_COUNT].tolist()
    if few:
        print(f"caution: fewer than {MIN_COUNT} positions for {few}; their medians are noisy")

    title = f"{args.model}: {len(frame)} tokens of pydoc prose (seed {args.seed})"
    plot(frame, n_layers, title, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    scripts.run_script(main)
