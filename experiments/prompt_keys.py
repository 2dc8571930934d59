"""Prompt keys: a prompt can only draw on knowledge whose keys it contains.

Each question is asked three ways: vaguely (the answer is implied but its keys are missing),
vaguely after neutral filler that brings it to the length of the term-rich prompt (so length
alone is controlled for), and with the domain's terms in the prompt. For each: the
teacher-forced log-probability of the whole answer, the entropy of the next-token distribution,
and prompt-key coverage (how much of the prompt the predicting position reads, and the key it
reads most). The claim holds if the term-rich prompts make the answer much more likely than both
other prompts in most questions, not in one anecdote, and make the model answer it.

    python experiments/prompt_keys.py [--model smollm2-135m] [--quick] [--out FILE.png]
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import scripts  # noqa: E402
from interp.analysis.coverage import TAU, coverage  # noqa: E402
from interp.errors import InterpError  # noqa: E402
from interp.files import save_figure  # noqa: E402

KINDS = ("vague", "padded", "rich")
# Claim thresholds: most questions improve, and by a lot (1 nat = the answer e times likelier),
# and the keys make the model answer: the answer ranks first for at least half the rich prompts.
# tiny-moe, which cannot know these answers, still gains about 1 nat from any English context
# around them, so the gain alone would not tell knowledge from fluency.
SHARE_IMPROVED, MEDIAN_GAIN, SHARE_ANSWERED = 0.75, 1.0, 0.5

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
# Keyless padding for the length control: says nothing about any of the questions.
FILLER = (
    "Here is one more question. People ask it now and then, at home and at work, and some of "
    "them know the answer while others have to think about it for a while before they reply."
).split()


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def padded(tok, vague: str, rich: str) -> str:
    """`vague` after as many filler words as bring it to the token length of `rich`."""
    target = n_tokens(tok, rich)
    for n in range(len(FILLER) + 1):
        text = f"{' '.join(FILLER[:n]).rstrip('.')}. {vague}" if n else vague
        if n_tokens(tok, text) >= target:
            return text
    raise InterpError(f"the filler is too short to pad {vague!r}")


def measure(model, prompts: list[str], answers: list[str]) -> pd.DataFrame:
    """Per prompt: log p of the whole answer (teacher forced), rank of its first token, the
    next-token entropy and top-1, the prompt's length and coverage, and its most-read key."""
    tok = model.tokenizer
    trace = interp.trace(model, prompts, capture=("attention",))
    cov = coverage(trace.query_attention, trace.tokens, bos_id=tok.bos_token_id).summary
    # " Paris" is its own pre-token, so prompt + answer tokenises as prompt, then answer.
    forced = interp.trace(model, [p + a for p, a in zip(prompts, answers, strict=True)],
                          capture=())  # fmt: skip
    tokens, rows = trace.tokens, []
    for p, answer in enumerate(answers):
        answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
        record = forced.records[p]
        if record.ids[-len(answer_ids) :].tolist() != answer_ids:
            raise InterpError(f"{answer!r} does not tokenise apart from its prompt")
        logp = trace.records[p].query_logits[-1].float().log_softmax(-1)
        top_key = tokens[(tokens.prompt == p) & (tokens.pos == cov.top_key[p])].token.iloc[0]
        rows.append({"logprob": float(record.logprob[-len(answer_ids) :].sum()),
                     "rank": int((logp > logp[answer_ids[0]]).sum()),
                     "entropy": float(-(logp.exp() * logp).sum()),
                     "top1": repr(tok.decode([int(logp.argmax())])),
                     "length": int(cov["keys"][p]) + 1,
                     "coverage": cov["coverage"][p],
                     "effective_coverage": cov["effective_coverage"][p],
                     "top_key": repr(top_key)})  # fmt: skip
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, title: str, out: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = np.arange(len(KINDS))
    titles = {"logprob": "log p of the answer (nats)", "entropy": "next-token entropy (nats)",
              "effective_coverage": "effective coverage"}  # fmt: skip
    for ax, (metric, name) in zip(axes, titles.items(), strict=True):
        values = table[each(metric)].to_numpy()
        for row in values:
            ax.plot(x, row, "o-", color="0.6", lw=1)
        ax.plot(x, np.median(values, axis=0), "s-", color="k", lw=2, label="median")
        ax.set(xticks=x, xticklabels=KINDS, title=name, xlim=(-0.3, len(KINDS) - 0.7))
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out)


def spread(gain: pd.Series) -> str:
    q1, median, q3 = np.percentile(gain, [25, 50, 75])
    return (f"median {median:.2f} nats, IQR [{q1:.2f}, {q3:.2f}]; "
            f"improved in {int((gain > 0).sum())} of {len(gain)}")  # fmt: skip


def each(metric: str) -> list[str]:
    return [f"{kind}_{metric}" for kind in KINDS]


def show(table: pd.DataFrame, columns: list[str]) -> None:
    """Print `columns` with short headers (v_, p_, r_) so the table fits a screen."""
    short = {c: c.replace("vague_", "v_").replace("padded_", "p_").replace("rich_", "r_")
             .replace("effective_coverage", "eff_cov") for c in columns}  # fmt: skip
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table[columns].rename(columns=short).to_string(
            index=False, float_format="{:.2f}".format))  # fmt: skip


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = scripts.parser(
        __doc__,
        "prompt_keys",
        model="smollm2-135m",
        seed_help="unused: greedy and deterministic",
        quick_help="three questions",
    )
    args = parser.parse_args(argv)
    model = scripts.start(args, argv)
    tok = model.tokenizer
    if tok is None:
        raise InterpError(f"{args.model} has no tokenizer: it takes token ids, not text")
    questions = QUESTIONS[:3] if args.quick else QUESTIONS
    vague, rich, answers = (list(column) for column in zip(*questions, strict=True))
    prompts = {"vague": vague, "rich": rich,
               "padded": [padded(tok, v, r) for v, r in zip(vague, rich, strict=True)]}  # fmt: skip
    both = [measure(model, prompts[kind], answers).add_prefix(f"{kind}_") for kind in KINDS]
    table = pd.concat(both, axis=1).assign(
        answer=answers, tokens=[n_tokens(tok, a) for a in answers]
    )
    table["gain"] = table.rich_logprob - table.vague_logprob
    table["gain_vs_padded"] = table.rich_logprob - table.padded_logprob
    print(f"\nexample of a padded prompt: {prompts['padded'][0]!r}")
    print(
        f"\n{len(table)} questions on {args.model} (v/p/r = vague/padded/rich prompt): log p "
        "of the whole answer (nats), its tokens, the rank of its first token, the top-1 token"
    )
    show(table, ["answer", "vague_logprob", "rich_logprob", "gain", "padded_logprob",
                 "gain_vs_padded", "tokens", *each("rank"), "vague_top1", "rich_top1"])  # fmt: skip
    print(
        "\nnext-token entropy (nats), prompt length (tokens), coverage (share of keys read at "
        f"{TAU:g}x uniform), effective coverage, the rich prompt's most-read key"
    )
    show(table, ["answer", *each("entropy"), *each("length"), *each("coverage"),
                 *each("effective_coverage"), "rich_top_key"])  # fmt: skip
    print(f"\ngain in log p (rich - vague): {spread(table.gain)}")
    print(f"gain over the length control (rich - padded): {spread(table.gain_vs_padded)}")
    print(f"padding alone (padded - vague): {spread(table.padded_logprob - table.vague_logprob)}")
    top1 = {kind: int((table[f"{kind}_rank"] == 0).sum()) for kind in KINDS}
    print("entropy (median, nats): " + ", ".join(
        f"{k} {table[f'{k}_entropy'].median():.2f}" for k in KINDS) + "; answer ranked first: "
        + ", ".join(f"{k} {top1[k]}" for k in KINDS))  # fmt: skip
    for metric in ("coverage", "effective_coverage"):
        print(f"{metric.replace('_', ' ')} (median): " + ", ".join(
            f"{k} {table[f'{k}_{metric}'].median():.2f}" for k in KINDS))  # fmt: skip
    holds = top1["rich"] >= SHARE_ANSWERED * len(table) and all(
        (g > 0).mean() >= SHARE_IMPROVED and g.median() > MEDIAN_GAIN
        for g in (table.gain, table.gain_vs_padded))  # fmt: skip
    print(f"claim 'a prompt can only draw on knowledge whose keys it contains' held: {holds} "
          f"(needs the rich prompt to beat both the vague and the padded prompt in >= "
          f"{SHARE_IMPROVED:.0%} of questions, by a median > {MEDIAN_GAIN:g} nat, and to rank "
          f"the answer first in >= {SHARE_ANSWERED:.0%})")  # fmt: skip
    plot(table, f"{args.model}: vague, padded and term-rich prompts ({len(table)} questions)",
         args.out)  # fmt: skip
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    scripts.run_script(main)
