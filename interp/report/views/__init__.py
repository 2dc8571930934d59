"""Interactive views that work offline: attention, the logit lens, routing, the journey,
sparse-dictionary features.

`show(trace, "attention", prompt=[0, 1])` (or `trace.show(...)`) gives a `View`: a notebook
draws it through `_repr_html_` (a sandboxed iframe holding the whole page, so it needs nothing
from Jupyter or VS Code and nothing from the network), `save(path)` writes it as one file.
The report embeds the same fragments (`page.fragment`) with the code once (`page.assets`).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from pathlib import Path

from interp.errors import InterpError
from interp.files import write_atomic
from interp.report.views import data, page

KINDS = tuple(data.BUILDERS)
_ids = itertools.count()


def payloads(trace, kind: str, prompts: Sequence[int], **options) -> list[tuple[str, dict]]:
    """(label, payload) per prompt of a live trace."""
    if kind not in data.BUILDERS:
        raise InterpError(f"unknown view {kind!r}: use one of {', '.join(KINDS)}")
    return [(f"P{p + 1}", data.BUILDERS[kind](trace, p, **options)) for p in prompts]


class View:
    """One view, of one prompt or of several side by side."""

    def __init__(self, kind: str, panes: list[tuple[str, dict]], title: str):
        self.kind, self.panes, self.title = kind, panes, title
        self.ident = f"iv{next(_ids)}"

    @property
    def html(self) -> str:
        return page.document(page.fragment(self.kind, self.panes, self.ident), self.title)

    def save(self, path: str | Path) -> Path:
        write_atomic(Path(path), self.html)
        return Path(path)

    def _repr_html_(self) -> str:
        # srcdoc: the page runs in its own document, so its ids and script cannot clash with the
        # notebook's; allow-scripts without allow-same-origin keeps it away from the notebook.
        return (
            f'<iframe srcdoc="{html.escape(self.html, quote=True)}" sandbox="allow-scripts" '
            'style="width: 100%; height: 640px; border: 1px solid #e5e7eb" '
            f'title="{html.escape(self.title)}"></iframe>'
        )


def show(trace, kind: str = "attention", prompt: int | Sequence[int] = 0, **options) -> View:
    """A view of `kind` (attention, lens, routing, journey, features) for one prompt, or several
    side by side (`prompt=[0, 1]`)."""
    prompts = [prompt] if isinstance(prompt, int) else list(prompt)
    if not prompts:
        raise InterpError("no prompt to show")
    model = trace.meta.get("model", "?")
    return View(kind, payloads(trace, kind, prompts, **options), f"interp {kind}: {model}")
