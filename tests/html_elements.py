"""Parsing a report's HTML in tests: start tags with attributes, text by the element's class."""

from __future__ import annotations

from html.parser import HTMLParser

# Elements that never have content or an end tag (HTML Living Standard, "void elements").
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each element by class."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text_by_class: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag not in VOID:  # a void element is closed already: nothing to pop later
            self._open.append(attrs.get("class") or "")

    def handle_startendtag(self, tag, attrs):  # <br/>: an empty element, never pushed
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open and self._open[-1]:
            self.text_by_class.setdefault(self._open[-1], []).append(data)
