"""The interactive views in real Chromium: hovering and clicking shows the trace's own numbers,
the layer and head controls switch what is shown, and nothing errs, calls out or runs from a
prompt. tiny-moe (4 layers, 4 heads, 16 experts) and a random 2-layer OLMoE with grouped-query
attention (4 query heads on 2 KV heads) keep them quick: no test here loads smollm2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from views_browser import Page, browser

import interp
from interp.analysis.journey import journey
from interp.analysis.lens import logit_lens
from interp.report import build_report
from interp.report.views.data import ROW_KEYS
from interp.text import show_token

HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
STEP = 0.5 / 255 + 1e-6  # uint8 quantisation: at most half a level off


@pytest.fixture(scope="module")
def driver():
    d = browser()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def moe_trace():
    model = interp.load("tiny-moe")
    return interp.trace(model, [HOSTILE, "def f(x): return x + 1"], max_new_tokens=3)


def heaviest(patterns: np.ndarray, keep: int = ROW_KEYS) -> np.ndarray:
    """The patterns as the attention view holds them: each row keeps its `keep` heaviest keys
    (the view's documented budget), every other weight is 0."""
    order = np.argsort(-patterns, axis=-1, kind="stable")
    kept = np.zeros_like(patterns, dtype=bool)
    np.put_along_axis(kept, order[..., :keep], True, axis=-1)
    return np.where(kept, patterns, 0.0)


def tokens(page: Page, view_id: str) -> list:
    return page.view(view_id).find_elements(By.CSS_SELECTOR, ".iv-tok")


def shaded(page: Page, view_id: str, attribute: str = "weight") -> np.ndarray:
    """The weights the page shaded the tokens with (data attributes of the token spans)."""
    return np.array(
        [float(s.get_attribute(f"data-{attribute}") or 0) for s in tokens(page, view_id)]
    )


def assert_clean(page: Page) -> None:
    """No console error, no request besides the page, and the hostile prompt is only text."""
    assert page.errors() == []
    assert page.requests() == []
    d = page.driver
    assert d.title != "pwned"
    assert d.find_elements(By.CSS_SELECTOR, ".iv-view img, .iv-view script") == []


def test_the_checks_catch_a_bad_page(driver, tmp_path):
    """The detectors themselves: a throwing script and a remote image are both caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="https://example.invalid/x.png">'
                   '<script>throw new Error("boom")</script></body></html>')  # fmt: skip
    page = Page(driver, bad, views=False)
    assert any("boom" in e for e in page.errors())
    assert page.requests() == ["https://example.invalid/x.png"]


def test_attention_view_shades_the_rows_of_the_trace(driver, moe_trace, tmp_path):
    view = moe_trace.show("attention", prompt=[0, 1])
    page = Page(driver, view.save(tmp_path / "a.html"))
    ident = view.ident
    assert page.state(f"{ident}-0")["query"] == moe_trace.records[0].n_prompt - 1  # at first
    patterns = heaviest(moe_trace.tensor("patterns", 0).numpy())  # [layer head query key]
    spans = tokens(page, f"{ident}-0")
    # The hostile prompt comes back as the spans' text, token by token.
    n_prompt = moe_trace.records[0].n_prompt
    assert "".join(s.get_attribute("textContent") for s in spans[:n_prompt]) == HOSTILE

    # Hover: layer 0, head 0 by default; keys shaded with the row, readers with the column.
    query = 9
    ActionChains(driver).move_to_element(spans[query]).perform()
    np.testing.assert_allclose(shaded(page, f"{ident}-0"), patterns[0, 0, query], atol=STEP)
    np.testing.assert_allclose(
        shaded(page, f"{ident}-0", "read-by"), patterns[0, 0, :, query], atol=STEP
    )

    # Switch layer and head, then click (pin) another token: hovering elsewhere keeps it.
    Select(page.view(f"{ident}-0").find_element(By.TAG_NAME, "select")).select_by_value("2")
    page.view(f"{ident}-0").find_element(By.CSS_SELECTOR, 'button[data-heads="3"]').click()
    spans[5].click()
    ActionChains(driver).move_to_element(spans[12]).perform()
    state = page.state(f"{ident}-0")
    assert (state["layer"], state["heads"], state["query"], state["pinned"]) == (2, [3], 5, True)
    np.testing.assert_allclose(shaded(page, f"{ident}-0"), patterns[2, 3, 5], atol=STEP)

    # All heads of the layer: the mean of their rows.
    page.view(f"{ident}-0").find_element(By.CSS_SELECTOR, 'button[data-heads="all"]').click()
    np.testing.assert_allclose(shaded(page, f"{ident}-0"), patterns[2, :, 5].mean(0), atol=STEP)
    assert_clean(page)


def test_lens_view_hover_shows_the_top_five(driver, moe_trace, tmp_path):
    view = moe_trace.show("lens", prompt=1)
    page = Page(driver, view.save(tmp_path / "lens.html"))
    top, _ = logit_lens(moe_trace, 1, k=5)
    canvas = page.view(f"{view.ident}-0").find_element(By.TAG_NAME, "canvas")
    for layer, pos in [(0, 0), (3, 7), (2, 4)]:
        center = driver.execute_script(
            f"return InterpViews.views['{view.ident}-0'].cellCenter({layer}, {pos})"
        )
        box = canvas.rect
        ActionChains(driver).move_to_element_with_offset(
            canvas, int(center["x"] - box["x"] - box["width"] / 2),
            int(center["y"] - box["y"] - box["height"] / 2),
        ).perform()  # fmt: skip
        state = page.state(f"{view.ident}-0")
        cell = top[(top["layer"] == layer) & (top["pos"] == pos)].sort_values("rank")
        assert (state["layer"], state["pos"]) == (layer, pos)
        assert [t for t, _ in state["top"]] == cell["token"].map(show_token).tolist()
        np.testing.assert_allclose([p for _, p in state["top"]], cell["prob"], atol=STEP)
        tip = page.view(f"{view.ident}-0").find_element(By.CLASS_NAME, "iv-tip")
        assert tip.is_displayed() and len(tip.find_elements(By.CLASS_NAME, "iv-tip-row")) == 6
    assert_clean(page)


def test_routing_view_shades_the_tokens_of_an_expert(driver, moe_trace, tmp_path):
    view = moe_trace.show("routing", prompt=[0, 1])
    page = Page(driver, view.save(tmp_path / "routing.html"))
    ident = f"{view.ident}-0"
    routing = moe_trace.routing
    chosen = routing[(routing["prompt"] == 0) & routing["selected"]]
    Select(page.view(ident).find_element(By.TAG_NAME, "select")).select_by_value("2")
    expert = int(chosen[chosen["layer"] == 2]["expert"].mode()[0])  # the busiest expert
    page.view(ident).find_element(By.CSS_SELECTOR, f'button[data-expert="{expert}"]').click()
    routed = chosen[(chosen["layer"] == 2) & (chosen["expert"] == expert)]
    expected = np.zeros(len(moe_trace.records[0].ids))
    expected[routed["pos"]] = routed["weight"]
    np.testing.assert_allclose(shaded(page, ident), expected, atol=STEP)
    assert (expected > 0).sum() >= 2

    pos = 4  # hover a token: its experts in every layer, heaviest first, with their weights
    ActionChains(driver).move_to_element(tokens(page, ident)[pos]).perform()
    state = page.state(ident)
    mine = chosen[chosen["pos"] == pos].sort_values(["layer", "rank"])
    assert [[e for e, _ in layer] for layer in state["choices"]] == [
        g["expert"].tolist() for _, g in mine.groupby("layer")
    ]
    np.testing.assert_allclose(
        [w for layer in state["choices"] for _, w in layer], mine["weight"], atol=STEP
    )
    assert_clean(page)


def test_journey_view_follows_a_clicked_position(driver, moe_trace, tmp_path):
    view = moe_trace.show("journey", prompt=0)
    page = Page(driver, view.save(tmp_path / "journey.html"))
    ident = f"{view.ident}-0"
    last = len(moe_trace.records[0].ids) - 1
    tokens(page, ident)[last].click()
    state = page.state(ident)
    frame = journey(moe_trace, 0, last)
    assert state == {"pos": last, "steps": len(frame)}  # every layer, then the boundary
    text = page.view(ident).find_element(By.CLASS_NAME, "iv-path").text
    for row in frame[frame["stage"] == "layer"].itertuples():
        assert f"reads {row.sources}" in text and f"lens {row.lens}" in text
    assert "the trace ends here" in text  # the last position: nothing was chosen after it
    assert_clean(page)


def test_report_views_with_gqa(driver, random_olmoe, tmp_path):
    """In the report: every view mounts; a KV head's button shows the mean of the query heads
    that share it, and each head button says which KV head it reads."""
    ids = torch.randint(10, 101, (2, 12), generator=torch.Generator().manual_seed(0))
    trace = interp.trace(random_olmoe, ids, max_new_tokens=2)
    path = build_report(trace, tmp_path / "report.html", model=random_olmoe, progress=False)
    page = Page(driver, path)
    states = driver.execute_script(
        "return Array.from(document.querySelectorAll('.iv-view')).map(n => n.id + ' ' +"
        " n.dataset.state)"
    )
    kinds = ("journey", "lens", "attention", "routing")
    assert states == [f"view-{k}-{p} ready" for k in kinds for p in (0, 1)]
    view = page.view("view-attention-1")
    groups = [g.text.split() for g in view.find_elements(By.CLASS_NAME, "iv-group")]
    assert groups == [["KV", "0", "0", "1"], ["KV", "1", "2", "3"]]
    view.find_element(By.CSS_SELECTOR, 'button[data-heads="kv1"]').click()
    tokens(page, "view-attention-1")[9].click()
    patterns = trace.tensor("patterns", 1).numpy()
    expected = patterns[0, 2:4, 9].mean(0)  # layer 0, query heads 2 and 3 share KV head 1
    np.testing.assert_allclose(shaded(page, "view-attention-1"), expected, atol=STEP)
    assert page.state("view-attention-1")["heads"] == [2, 3]
    assert_clean(page)


def test_markup_tokens_stay_text_in_every_view(driver, moe_trace, tmp_path):
    """Tokens that are whole tags (vocabularies hold "<div>", "<br>"): the views' own data with
    every token string and every text cell replaced by markup; it must show, inert, as text."""
    from interp.report.views import View, payloads

    for kind in ("attention", "lens", "routing", "journey"):
        label, payload = payloads(moe_trace, kind, [1])[0]
        payload["tokens"] = [HOSTILE] * len(payload["tokens"])
        if kind == "lens":
            payload["vocab"] = [HOSTILE] * len(payload["vocab"])
        for rows in payload.get("journeys", {}).values():
            for row in rows:
                row.update(sources=HOSTILE, lens=HOSTILE, experts=HOSTILE, chosen=HOSTILE)
        view = View(kind, [(HOSTILE, payload)], HOSTILE)
        page = Page(driver, view.save(tmp_path / f"{kind}.html"))
        ident = f"{view.ident}-0"
        if kind == "lens":  # a canvas: its text is drawn, and the tooltip's is set as text
            canvas = page.view(ident).find_element(By.TAG_NAME, "canvas")
            ActionChains(driver).move_to_element(canvas).perform()
            assert page.state(ident)["top"][0][0] == HOSTILE
        else:
            spans = tokens(page, ident)
            ActionChains(driver).move_to_element(spans[3]).perform()
            spans[len(spans) - 1].click()
        text = driver.find_element(By.TAG_NAME, "body").text
        assert HOSTILE in text, kind  # the label, the tokens: as typed
        assert_clean(page)
