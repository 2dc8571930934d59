"""Features in the report, the survey report and the feature view (tiny-moe; the view in
real Chromium where it is installed): the page shows the trace's and the survey's numbers."""

from __future__ import annotations

import html as htmllib
import re

import numpy as np
import pytest
from feature_files import weights, write_saelens

import interp
from interp.cli import main
from interp.report.views.feature_data import features as payload
from interp.survey.output import Survey

HOOK = "blocks.2.hook_resid_post"
PROMPTS = ["The cat sat on the mat", "def f(x): return x + 1"]
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A dictionary, a survey counted with it, and a report with both (through the CLI)."""
    root = tmp_path_factory.mktemp("features")
    sae = write_saelens(root / "res2", "topk", weights(d_in=128, d_sae=96, seed=7), k=6,
                        hook_name=HOOK)  # fmt: skip
    survey = root / "survey"
    assert main(["survey", "--model", "tiny-moe", "--stats", "heads", "--tokens", "2000",
                 "--seq-len", "64", "--features", str(sae), "--out", str(survey),
                 "--no-progress"]) == 0  # fmt: skip
    report = root / "report.html"
    assert (
        main(
            [
                "report",
                *PROMPTS,
                "--model",
                "tiny-moe",
                "--features",
                str(sae),
                "--feature-survey",
                str(survey),
                "-o",
                str(report),
                "--no-progress",
            ]
        )
        == 0
    )
    return sae, Survey.load(survey), report  # fmt: skip


@pytest.fixture(scope="module")
def trace(made):
    model = interp.load("tiny-moe")
    return interp.trace(model, PROMPTS, features=[made[0]])


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


def test_report_section_shows_the_traces_numbers(made, trace):
    part = _section(made[2].read_text(), "features")
    assert 'data-kind="features"' in part
    errors = trace.feature_error
    for p in range(2):
        rows = errors[errors.prompt == p]
        cells = re.findall(rf"<td>P{p + 1}</td><td>res2</td><td>{HOOK}</td>(.*?)</tr>", part)
        numbers = [htmllib.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells[0])]
        assert numbers == [str(len(rows)), f"{rows.l0.mean():.3g}", f"{rows.relative.mean():.3g}"]


def test_view_payload_holds_the_frames_and_the_survey(made, trace):
    survey = made[1]
    data = payload(trace, 1, survey)
    d = data["dictionaries"][0]
    frame = trace.features[trace.features.prompt == 1]
    for pos, top in enumerate(d["top"]):
        rows = frame[frame.pos == pos]
        assert [f for f, _ in top] == rows.feature.tolist()
        np.testing.assert_allclose([a for _, a in top], rows.activation, atol=1e-4)
    shown = {f for top in d["top"] for f, _ in top}
    assert set(d["density"]) == {str(f) for f in shown}
    for f in shown:
        expect = survey.features.set_index("feature").density[f]
        assert d["density"][str(f)] == pytest.approx(expect)
        ctx = survey.feature_contexts
        ctx = ctx[(ctx.feature == f) & (ctx["rank"] < 5)].sort_values("rank")
        assert [c["activation"] for c in d["contexts"].get(str(f), [])] == pytest.approx(
            ctx.activation.tolist(), abs=1e-4
        )
    assert sum(b[2] for b in d["histogram"]) == int((survey.features["count"] > 0).sum())


def test_survey_report_has_a_features_section(made, tmp_path):
    out = tmp_path / "survey.html"
    survey_dir = made[2].parent / "survey"
    assert main(["report", "--survey", str(survey_dir), "-o", str(out)]) == 0
    part = _section(out.read_text(), "features")
    summary = made[1].feature_summary.iloc[0]
    assert f"<td>{summary.dead_fraction:.3g}</td>" in part.replace(' class="num"', "")
    assert "data:image/svg+xml" in part


def test_feature_survey_without_features_is_one_line(made, tmp_path, capsys):
    argv = ["report", "x", "--model", "tiny-moe", "--feature-survey", "/nowhere",
            "-o", str(tmp_path / "r.html")]  # fmt: skip
    assert main(argv) == 2
    assert "--feature-survey needs --features" in capsys.readouterr().err


def test_view_in_a_browser(made, trace, tmp_path):
    from selenium.webdriver.common.by import By
    from views_browser import Page, browser

    driver = browser()
    try:
        view = trace.show("features", prompt=1, survey=made[1])
        page = Page(driver, view.save(tmp_path / "features.html"))
        ident = f"{view.ident}-0"
        spans = page.view(ident).find_elements(By.CSS_SELECTOR, ".iv-tokens .iv-tok")
        spans[3].click()
        frame = trace.features[(trace.features.prompt == 1)]
        top = frame[frame.pos == 3]
        assert page.state(ident) == {"dict": 0, "pos": 3, "feature": int(top.feature.iloc[0])}
        rows = page.view(ident).find_elements(By.CSS_SELECTOR, "tr[data-feature]")
        assert [int(r.get_attribute("data-feature")) for r in rows] == top.feature.tolist()
        rows[1].click()  # the second feature: the prompt is shaded by it
        second = int(top.feature.iloc[1])
        acts = np.array([frame[(frame.pos == p) & (frame.feature == second)].activation.sum()
                         for p in range(len(spans))])  # fmt: skip
        weights_shown = [float(s.get_attribute("data-weight") or 0) for s in spans]
        np.testing.assert_allclose(weights_shown, acts / acts.max(), atol=1e-3)
        contexts = page.view(ident).find_elements(By.CLASS_NAME, "iv-context")
        assert len(contexts) == len(payload(trace, 1, made[1])["dictionaries"][0]["contexts"]
                                    .get(str(second), []))  # fmt: skip
        assert page.errors() == [] and page.requests() == []
        hostile = payload(trace, 1, made[1])
        hostile["tokens"] = [HOSTILE] * len(hostile["tokens"])
        from interp.report.views import View

        bad = View("features", [(HOSTILE, hostile)], "x")
        page = Page(driver, bad.save(tmp_path / "hostile.html"))
        assert HOSTILE in driver.find_element(By.TAG_NAME, "body").text
        assert driver.title != "pwned" and page.errors() == []
    finally:
        driver.quit()


def test_rebuilt_report_shows_the_same_features(trace, tmp_path):
    from interp.report import build_report

    first = build_report(trace, tmp_path / "a.html", progress=False, save=tmp_path / "kept")
    again = build_report(interp.Trace.load(tmp_path / "kept"), tmp_path / "b.html", progress=False)
    part = _section(first.read_text(), "features")
    assert 'data-kind="features"' in part and part == _section(again.read_text(), "features")
