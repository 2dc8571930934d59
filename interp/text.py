"""Token text: the one home for turning token ids into strings and strings into display cells."""

from __future__ import annotations

from collections.abc import Iterable


def token_texts(tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token's own text (the ids as strings for token-only models)."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    return [tokenizer.decode([i]) for i in ids]


def decode(tokenizer, ids: Iterable[int]) -> str:
    """The text of a whole span (joined ids for token-only models)."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return " ".join(map(str, ids))
    return tokenizer.decode(ids)


def show_token(text: str) -> str:
    """A token as one table cell: newlines and tabs escaped, a blank token quoted."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text.strip() or repr(text)
