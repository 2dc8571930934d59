"""One way to keep a trace and rebuild its report: build_report(save=DIR) / --save, --from."""

from __future__ import annotations

import torch

import interp
from interp.cli import main
from interp.report import build_report


def test_saved_report_rebuilds_identically_without_the_model(tmp_path, monkeypatch):
    model = interp.load("tiny-moe")
    ids = torch.randint(10, 200, (1, 12), generator=torch.Generator().manual_seed(0))
    trace = interp.trace(model, ids, max_new_tokens=2)
    live = build_report(
        trace, tmp_path / "live.html", model=model, progress=False, save=tmp_path / "t"
    )
    assert sorted(p.name for p in (tmp_path / "t").glob("report_*.parquet"))[:2] == [
        "report_coverage.parquet", "report_coverage_causal.parquet"
    ]  # fmt: skip

    def no_loading(name, **options):
        raise AssertionError(name)

    monkeypatch.setattr(interp, "load", no_loading)
    out = tmp_path / "again.html"
    assert main(["report", "--from", str(tmp_path / "t"), "-o", str(out), "--no-progress"]) == 0
    assert out.read_text() == live.read_text()
    assert "not saved with this trace" not in out.read_text()
