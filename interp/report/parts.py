"""The pieces a section is made of: tables, figures, shaded tokens, side-by-side panes.

Sections hand these plain values to the template, which escapes every string it prints.
Nothing here is ever marked safe: figures travel as base64 data URIs inside an <img>, so the
token text drawn in a figure can neither inject markup nor reach the network.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Active while sections draw (html.py): a fixed salt (with no date below) makes the same trace
# give byte-identical figures, and tokens such as "$x$" are drawn as typed, not as math.
RC = {"svg.hashsalt": "interp-report", "text.parse_math": False}
SVG_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


@dataclass
class Image:
    uri: str  # data:image/svg+xml;base64,...
    alt: str


@dataclass
class Table:
    caption: str
    columns: list[str]
    rows: list[list[str]]
    row_classes: list[str]  # "differs" marks a row whose values differ between prompts
    numeric: list[bool]  # per column: right-aligned
    collapsed: bool = False  # long tables sit in a <details> element


@dataclass
class Token:
    text: str
    shade: float  # 0..1, the background's opacity
    title: str  # the hover text: probability, token id
    generated: bool


@dataclass
class Pane:
    """One prompt's column in a side-by-side comparison."""

    label: str
    tokens: list[Token] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    explanation: str
    images: list[Image] = field(default_factory=list)
    scale: list[Token] = field(default_factory=list)  # a legend for shaded tokens
    panes: list[Pane] = field(default_factory=list)
    stacked: bool = False  # panes one under the other (wide tables), not side by side
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    views: list = field(default_factory=list)  # interactive views (report.views.page.fragment)
    # measure name -> one value per prompt; the summary section collects these.
    measures: dict[str, list] = field(default_factory=dict)


def image(fig: Figure, alt: str) -> Image:
    """An SVG data URI of `fig` (built without pyplot, so nothing keeps it alive after)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=SVG_METADATA)
    return Image("data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode(), alt)


def fmt(value, digits: int = 3) -> str:
    """Numbers for people: ints with thousands separators, floats to `digits` significant."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}g}"
    return str(value)


def table(
    frame: pd.DataFrame,
    caption: str,
    digits: int = 3,
    differs: list[bool] | None = None,
    collapsed: bool = False,
) -> Table:
    rows = [[fmt(v, digits) for v in row] for row in frame.itertuples(index=False)]
    classes = ["differs" if d else "" for d in (differs or [False] * len(rows))]
    numeric = [_is_numeric(frame[c]) for c in frame.columns]
    return Table(caption, [str(c) for c in frame.columns], rows, classes, numeric, collapsed)


def _is_numeric(column: pd.Series) -> bool:
    """Numbers (not flags) right-align; a mixed column counts if it holds no text."""
    values = column.dropna()
    return len(values) > 0 and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in values
    )


def prompt_labels(n: int) -> list[str]:
    return [f"P{i + 1}" for i in range(n)]
