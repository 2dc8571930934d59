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


def plain_ids(tokenizer, text: str) -> list[int]:
    """`text`'s ids with no special token added: pieces of a longer text, single tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def default_bos(tokenizer) -> int | None:
    """The BOS id the tokenizer adds to a text by default (None when it adds none)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos is None:
        return None
    return (
        bos if tokenizer("a")["input_ids"][:1] == [bos] != plain_ids(tokenizer, "a")[:1] else None
    )


def encode_text(
    tokenizer, text: str, n_ctx: int, prepend_bos: bool | None = None
) -> tuple[torch.Tensor, bool]:
    """1-D token ids for `text` and whether a BOS was put before it. By default the way the
    model's own tokenizer encodes a text (`tokenizer(text)`: BOS where it adds one), except
    that a text already beginning with BOS (a chat template's output) gets no second one;
    `prepend_bos=True / False` puts BOS first / leaves it out whatever the tokenizer does.
    An empty or over-long prompt is a user error."""
    if tokenizer is None:
        raise InterpError("this model has no tokenizer: pass token ids, not text")
    text = validate.text(text)
    plain = plain_ids(tokenizer, text)
    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos is None:
        ids = plain if bos is not None and plain[:1] == [bos] else tokenizer(text)["input_ids"]
    elif prepend_bos and bos is None:
        raise InterpError("prepend_bos=True, but this model's tokenizer has no BOS token")
    else:
        ids = [bos] + plain if prepend_bos else plain
    added = bos is not None and len(ids) > len(plain) and ids[:1] == [bos]
    validate.context(len(ids), 0, n_ctx)
    return torch.tensor(ids, dtype=torch.long), added


def encode(tokenizer, text: str, n_ctx: int, prepend_bos: bool | None = None) -> torch.Tensor:
    """`encode_text`'s ids alone."""
    return encode_text(tokenizer, text, n_ctx, prepend_bos)[0]
