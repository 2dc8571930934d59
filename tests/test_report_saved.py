"""One way to keep a trace and rebuild its report: build_report(save=DIR) / --save, --from."""

from __future__ import annotations

import interp
from interp.cli import main
from interp.report import build_report


def test_saved_report_rebuilds_identically_without_the_model(tmp_path, monkeypatch):
    model = interp.load("tiny-moe")
    # Text, not random ids: a live report decodes a prompt span whole, a rebuilt one joins its
    # token texts, and the two differ on byte tokens that form no character.
    trace = interp.trace(model, "The cat sat on the mat. The cat", max_new_tokens=2)
    live = build_report(
        trace, tmp_path / "live.html", model=model, progress=False, save=tmp_path / "t"
    )
    saved = {p.name for p in (tmp_path / "t").glob("report_*.parquet")}
    assert {"report_coverage.parquet", "report_coverage_causal.parquet"} <= saved

    def no_loading(name, **options):
        raise AssertionError(name)

    monkeypatch.setattr(interp, "load", no_loading)
    out = tmp_path / "again.html"
    assert main(["report", "--from", str(tmp_path / "t"), "-o", str(out), "--no-progress"]) == 0
    again, first = out.read_text(), live.read_text()
    # Sections drawn from frames and derived analyses are the same; the interactive views read
    # live tensors, so a rebuilt report shows its static tables and figures there instead.
    for anchor in ("model", "text", "coverage", "shapes", "summary"):
        assert _section(again, anchor) == _section(first, anchor)
    assert "not saved with this trace" not in out.read_text()


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}"')
    return html[start : html.index("</section>", start)]
