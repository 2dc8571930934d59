"""Token text: the one home for turning token ids into strings and strings into display cells.

Byte-level tokenizers split a multi-byte character over several tokens; decoding one such token
alone gives U+FFFD. So text is always decoded as a whole span (`decode`), and a token holding
part of a character is shown as the bytes it holds, `<0xE6>`, which marks it partial.
"""

from __future__ import annotations

import codecs
import functools
import unicodedata
from collections.abc import Iterable

# Undecodable bytes of a partial character -> "<0xE6>".
codecs.register_error(
    "interp-bytes",
    lambda e: ("".join(f"<0x{b:02X}>" for b in e.object[e.start : e.end]), e.end),
)


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: each printable stand-in character -> its byte."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return {(chr(b) if b in printable else chr(next(extra))): b for b in range(256)}


def _token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes of a byte-level BPE token, or None for another kind of tokenizer."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(piece, str):
        return None
    if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:  # byte fallback
        return bytes([int(piece[3:5], 16)])
    table = _byte_decoder()
    if not piece or any(ch not in table for ch in piece):
        return None
    return bytes(table[ch] for ch in piece)


def token_texts(tokenizer, ids: Iterable[int]) -> list[str]:
    """Each token's own text (the ids as strings for token-only models); a token holding part
    of a multi-byte character shows its bytes, e.g. 'caf' + '<0xC3>' + '<0xA9>'."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return [str(i) for i in ids]
    texts = []
    for i in ids:
        text = tokenizer.decode([i])
        if "\ufffd" in text:
            raw = _token_bytes(tokenizer, i)
            if raw is not None and b"\xef\xbf\xbd" not in raw:  # not a real U+FFFD
                text = raw.decode("utf-8", errors="interp-bytes")
        texts.append(text)
    return texts


def decode(tokenizer, ids: Iterable[int]) -> str:
    """The text of a whole span (joined ids for token-only models)."""
    ids = [int(i) for i in ids]
    if tokenizer is None:
        return " ".join(map(str, ids))
    return tokenizer.decode(ids)


_MARKS = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}  # ↵ ⇥ ␍


def _visible(ch: str) -> str:
    """A control or invisible format character as a visible mark; any other unchanged."""
    if ch in _MARKS:
        return _MARKS[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return chr(0x2400 + code) if code < 0x20 else "\u2421"  # ␀ ... ␟, ␡
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
        return f"<U+{code:04X}>"  # zero-width, direction marks, BOM, C1 controls
    return ch


def show_token(text: str) -> str:
    """A token as one table cell, unambiguous: control and zero-width characters and the
    token's leading and trailing spaces become visible marks (␣), so "\\n" and " \\n" differ."""
    if not text:
        return "\u2205"  # ∅
    body = "".join(_visible(ch) for ch in text)
    stripped = body.strip(" ")
    if not stripped:
        return "\u2423" * len(body)
    lead = len(body) - len(body.lstrip(" "))
    trail = len(body) - len(body.rstrip(" "))
    return "\u2423" * lead + stripped + "\u2423" * trail


def show_text(text: str) -> str:
    """Running text (a prompt, a token in a text pane): control and invisible characters made
    visible; a newline gets a mark and still breaks the line. Empty text shows as ∅."""
    return (
        "".join(ch if ch == " " else _visible(ch) + ("\n" if ch == "\n" else "") for ch in text)
        or "\u2205"
    )
