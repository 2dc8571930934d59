"""The sampling boundary: logits -> a distribution -> one token, and the rows that record it.

Tokens are drawn from float32 probabilities on the CPU with a CPU generator, so one seed picks
the same tokens on the CPU and on a GPU wherever the logits agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from interp import validate
from interp.text import token_texts
from interp.vocab import entropy

TOP_CANDIDATES = 10


@dataclass(frozen=True)
class Sampling:
    """temperature 0 means greedy; top_k 0 and top_p 1 mean no truncation."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        # Frozen: the checked values are written back through object.__setattr__.
        checked = {
            "temperature": validate.number(self.temperature, "temperature", low=0),
            "top_k": validate.integer(self.top_k, "top_k", low=0),
            "top_p": validate.number(self.top_p, "top_p", low=0, high=1, low_open=True),
            "seed": validate.seed(self.seed),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def as_dict(self) -> dict:
        return asdict(self)

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The probabilities actually sampled from (after temperature, top-k, top-p), float32 on
        the CPU."""
        logits = logits.float().cpu()
        if self.temperature <= 0:
            probs = torch.zeros_like(logits)
            probs[logits.argmax()] = 1.0
            return probs
        # Shifted by the max first (softmax does not change), in float64: a temperature near 0
        # then sends the others to -inf and keeps the max at 0, never inf - inf = nan.
        logits = ((logits.double() - logits.max()) / self.temperature).float()
        if self.top_k > 0:
            kth = logits.topk(min(self.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = logits.softmax(-1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= self.top_p
            probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
            probs = probs / probs.sum()
        return probs

    def choose(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        probs = self.distribution(logits)
        if self.temperature <= 0:
            return int(probs.argmax())
        return int(torch.multinomial(probs, 1, generator=generator))


def sampling_rows(step, pos, logits, sampling: Sampling, token: int, tokenizer) -> list[dict]:
    """The top candidates of one generation step (plus the chosen token if it ranked lower)."""
    probs = logits.float().cpu().softmax(-1)
    sampled = sampling.distribution(logits)
    top = probs.topk(TOP_CANDIDATES).indices.tolist()
    if token not in top:
        top.append(token)
    ent = float(entropy(logits))
    return [
        {
            "step": step,
            "pos": pos,
            "rank": int((probs > probs[t]).sum()),
            "token_id": t,
            "token": text,
            "prob": float(probs[t]),
            "sample_prob": float(sampled[t]),
            "chosen": t == token,
            "entropy": ent,
        }  # fmt: skip
        for t, text in zip(top, token_texts(tokenizer, top))
    ]
