"""Any text survives: split characters, control and zero-width characters, whitespace tokens."""

from __future__ import annotations

import re

import pytest

import interp
from interp.text import decode, show_text, show_token, token_texts

TEXTS = ["café 東京", "안녕하세요 세계", "שלום עולם", "a\u200bb\u200dc\ufeff", "x\x00y\x07z"]


@pytest.fixture(scope="module")
def moe():
    return interp.load("tiny-moe")


def _bytes_of(shown: str) -> bytes:
    """A token_texts string back to bytes: <0xNN> marks are bytes, the rest is UTF-8."""
    parts = re.split(r"(<0x[0-9A-F]{2}>)", shown)
    return b"".join(bytes([int(p[3:5], 16)]) if p.startswith("<0x") else p.encode() for p in parts)


@pytest.mark.parametrize("text", TEXTS)
def test_token_texts_hold_every_byte_and_no_replacement_character(moe, text):
    ids = moe.tokenizer(text, add_special_tokens=False)["input_ids"]
    texts = token_texts(moe.tokenizer, ids)
    assert "\ufffd" not in "".join(texts)
    assert b"".join(_bytes_of(t) for t in texts) == text.encode("utf-8")
    assert decode(moe.tokenizer, ids) == text


def test_a_split_character_shows_as_marked_bytes(moe):
    ids = moe.tokenizer("café", add_special_tokens=False)["input_ids"]
    assert token_texts(moe.tokenizer, ids)[-2:] == ["<0xC3>", "<0xA9>"]  # é = C3 A9 in UTF-8


def test_distinct_whitespace_tokens_show_distinctly():
    tokens = ["\n", " \n", "\n ", "\n    ", "\n\n", " ", "  ", "\t", "\r\n", "", "a ", " a"]
    shown = [show_token(t) for t in tokens]
    assert len(set(shown)) == len(tokens), shown
    assert all(s and not s.isspace() for s in shown)


def test_journey_candidates_are_unambiguous(moe, capsys):
    from interp import cli

    assert cli.main(["journey", "def add(a, b):", "--model", "tiny-moe", "--format", "json"]) == 0
    import json

    boundary = json.loads(capsys.readouterr().out)[-1]
    cells = [c.rsplit(" ", 3)[0] for c in boundary["lens"].split(" | ")]
    # The same candidates, independently: the top-5 next-token ids of the final logits.
    trace = interp.trace(moe, "def add(a, b):", max_new_tokens=1)
    top = trace.records[0].query_logits[0].topk(5).indices.tolist()
    texts = [moe.tokenizer.decode([i]) for i in top]
    assert cells == [show_token(t) for t in texts]
    assert len(set(cells)) == len(set(texts)) == 5  # "\n   " and "\n       " no longer both "\n"


def test_control_and_invisible_characters_are_visible():
    assert show_token("\x00") == "\u2400" and show_token("a\x07") == "a\u2407"
    assert show_token("\u200b") == "<U+200B>" and show_token("\x85") == "<U+0085>"
    assert show_text("line\nnext\x00") == "line\u21b5\nnext\u2400"
    assert show_text("שלום 東京") == "שלום 東京"  # letters of any script stay as they are


def test_report_text_pane_keeps_every_script(moe, tmp_path):
    from html_elements import Elements

    from interp.report import build_report

    prompts = ["안녕하세요 세계", "שלום עולם", "zero\u200bwidth", "nul\x00here café"]
    trace = interp.trace(moe, prompts, max_new_tokens=2)
    html = build_report(trace, tmp_path / "r.html", model=moe, progress=False).read_text()
    assert "\x00" not in html and "\ufffd" not in html
    texts = Elements(html).text_by_class["prompt-text"]
    assert texts[:4] == ["안녕하세요 세계", "שלום עולם", "zero<U+200B>width", "nul\u2400here café"]
