"""The sampling boundary: logits -> a distribution -> one token, and the KV cache it leaves."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from interp import validate

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
        """The probabilities actually sampled from (after temperature, top-k, top-p)."""
        logits = logits.float()
        if self.temperature <= 0:
            probs = torch.zeros_like(logits)
            probs[logits.argmax()] = 1.0
            return probs
        logits = logits / self.temperature
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


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) along the last axis."""
    logp = logits.float().log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def kv_cache_bytes(cfg, positions: int, dtype_bytes: int = 4) -> tuple[int, int]:
    """(bytes held with the model's KV heads, bytes full multi-head attention would hold).

    2 (K and V) x layers x KV heads x d_head x positions x bytes; MLP and MoE layers add nothing.
    """
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_head = 2 * cfg.n_layers * cfg.d_head * positions * dtype_bytes
    return per_head * n_kv, per_head * cfg.n_heads


def measured_cache_bytes(past_key_values) -> int:
    """Bytes actually held by a Hugging Face cache object."""
    total = 0
    for layer in getattr(past_key_values, "layers", []):
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total
