"""Text -> token ids, with the checks every entry point needs."""

from __future__ import annotations

import torch

from interp import validate
from interp.errors import InterpError

MAX_TEMPLATE_CHARS = 2**22


def format_prompt(tokenizer, text: str, chat: bool = False) -> str:
    """`text`, or `text` as one user turn of the model's chat template (generation prompt on)."""
    if not chat:
        return text
    if not getattr(tokenizer, "chat_template", None):
        raise InterpError("this model has no chat template; drop --chat")
    messages = [{"role": "user", "content": text}]
    try:  # transformers renders it in jinja's sandbox: no attribute escapes, bounded ranges
        out = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # the template is the model's code: any failure of it is its own
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise InterpError(f"this model's chat template failed ({type(exc).__name__}: "
                          f"{reason}); drop --chat or fix the template") from None  # fmt: skip
    if not isinstance(out, str) or len(out) > MAX_TEMPLATE_CHARS:
        raise InterpError("this model's chat template made no prompt of a sane size; drop --chat")
    return validate.text(out, "the chat template's output")


def encode(tokenizer, text: str, n_ctx: int) -> torch.Tensor:
    """1-D token ids for `text`; an empty or over-long prompt is a user error."""
    if tokenizer is None:
        raise InterpError("this model has no tokenizer: pass token ids, not text")
    ids = tokenizer(validate.text(text), add_special_tokens=False, return_tensors="pt")
    ids = ids["input_ids"][0]
    validate.context(len(ids), 0, n_ctx)
    return ids
