"""The report's patching and contribution-graph sections, and key attribution heading the
coverage section, on tiny-moe (the numbers are the API's)."""

from __future__ import annotations

import numpy as np
import pytest

import interp
from interp.report import build_report, derive
from interp.runs.patching import patching

CLEAN, CORRUPT = "def foo(a, b):\n    return a +", "def foo(x, y):\n    return x +"


def section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    model = interp.load("tiny-moe")
    run = interp.trace(model, [CLEAN, CORRUPT], max_new_tokens=1)
    run.meta["patch"] = {"answer": " ", "wrong": "'"}
    path = tmp_path_factory.mktemp("report") / "patch.html"
    build_report(run, path, model=model, progress=False)
    return model, run, path.read_text()


def test_patching_section_shows_the_api_grids(report):
    model, run, html = report
    part = section(html, "patching")
    assert part.count("<img") == 3 and "This section failed" not in part
    api = patching(model, CLEAN, CORRUPT, " ", "'")
    for grid, frame in api.frames.items():
        pair = frame.pivot_table(index=[c for c in frame if c in ("layer", "pos", "head")],
                                 columns="method", values="score")  # fmt: skip
        assert f"{pair.corr().iloc[0, 1]:.3g}" in part, grid
    # Without --patch the section says how to ask for it.
    derived = derive(interp.trace(model, CLEAN), model)
    assert "interp report --patch" in derived["patching"]


def test_contributions_and_attribution_headline(report):
    model, run, html = report
    assert section(html, "contributions").count("<img") == 2  # one graph per prompt
    coverage = section(html, "coverage")
    assert coverage.index("key attribution") < coverage.index("most read prompt tokens")
    frames = derive(run, model)
    shares = frames["contributions"].groupby(["prompt", "layer", "stage"])["share"].sum()
    np.testing.assert_allclose(shares, 1.0, atol=1e-5)
    assert set(frames["key_attribution"]["prompt"]) == {0, 1}
