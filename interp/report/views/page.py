"""Views as HTML: the shared assets (CSS and JavaScript, inlined), one fragment per view, and
a whole page for a notebook or a file.

Only this module writes view markup. Labels are escaped here and payloads go through
`script_json`, so the fragments can be marked safe for the report's autoescaping template;
every token string is inserted by the JavaScript as text (textContent), never as markup.
"""

from __future__ import annotations

import html
from importlib.resources import files

from markupsafe import Markup

from interp.report.views.encode import script_json

SCRIPTS = ["common.js", "attention.js", "lens.js", "routing.js", "journey.js", "features.js"]


def _read(name: str) -> str:
    return files("interp.report.views").joinpath(name).read_text(encoding="utf-8")


def assets() -> Markup:
    """The style and code every view on a page shares; include once per page."""
    code = "\n".join(_read(name) for name in SCRIPTS)
    return Markup(f"<style>\n{_read('views.css')}</style>\n<script>\n{code}</script>\n")


def fragment(kind: str, panes: list[tuple[str, dict]], ident: str) -> Markup:
    """One view per (label, payload), side by side: the comparison of prompts."""
    parts = []
    for i, (label, payload) in enumerate(panes):
        view_id = f"{ident}-{i}"
        parts.append(
            f'<div class="iv-pane"><div class="iv-label">{html.escape(label)}</div>'
            f'<div class="iv-view" id="{view_id}" data-kind="{kind}" data-payload="{view_id}-data">'
            f'</div><script type="application/json" id="{view_id}-data">'
            f"{script_json(payload)}</script></div>"
        )
    return Markup(f'<div class="iv-compare">{"".join(parts)}</div>')


def document(body: Markup, title: str) -> str:
    """A whole offline page around view fragments."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{body}\n{assets()}</body>\n</html>\n"
    )
