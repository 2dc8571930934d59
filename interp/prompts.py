"""Text -> token ids, with the checks every entry point needs."""

from __future__ import annotations

import torch

from interp import validate
from interp.errors import InterpError


def format_prompt(tokenizer, text: str, chat: bool = False) -> str:
    """`text`, or `text` as one user turn of the model's chat template (generation prompt on)."""
    if not chat:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise InterpError("this model has no chat template; drop --chat")
    messages = [{"role": "user", "content": text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(tokenizer, text: str, n_ctx: int) -> torch.Tensor:
    """1-D token ids for `text`; an empty or over-long prompt is a user error."""
    if tokenizer is None:
        raise InterpError("this model has no tokenizer: pass token ids, not text")
    ids = tokenizer(validate.text(text), add_special_tokens=False, return_tensors="pt")
    ids = ids["input_ids"][0]
    validate.context(len(ids), 0, n_ctx)
    return ids
