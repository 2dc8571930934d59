"""HTML reports: escaping, self-containment, atomic writes, every section, saved traces."""

from __future__ import annotations

import html as htmllib
import os
import re

import pytest
import torch
from html_elements import Elements

import interp
from interp.analysis import coverage as cv
from interp.errors import InterpError
from interp.files import write_atomic
from interp.report import build_report, save_trace
from interp.report.coverage import SUMMARY, verdict
from interp.report.parts import fmt

MARKUP = "<script>alert(1)</script><b>x</b>"
PASSWORD = "The password is 7391. Remember the password. The password is"
GENERATE = 3
SECTIONS = {
    "model": "The model",
    "text": "The text",
    "journey": "The token's journey",
    "residual": "The residual stream",
    "attention": "Attention",
    "coverage": "Prompt-key coverage",
    "experts": "Experts",
    "shapes": "The shape journey of one block",
    "summary": "Comparison summary",
}


def assert_self_contained(html: str) -> None:
    """No URL that leaves the page: every src is a data URI, every href an in-page anchor."""
    assert not re.search(r"(https?|ftp|file|wss?):", html, re.I)
    for tag, attrs in Elements(html).tags:
        for name in ("src", "href", "srcset", "action", "poster"):
            if name in attrs:
                value = attrs[name] or ""
                assert value.startswith("data:" if name == "src" else "#"), (tag, name, value)
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag


def assert_sections(html: str) -> None:
    for anchor, heading in SECTIONS.items():
        assert f'<section id="{anchor}">' in html
        assert f"<h2>{heading.replace(chr(39), '&#39;')}</h2>" in html
    assert "This section failed" not in html


def section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


def cells(part: str) -> dict[str, str]:
    """The two-column tables of a piece of the page: first cell -> second, unescaped."""
    pairs = re.findall(r"<tr[^>]*><td>(.*?)</td><td[^>]*>(.*?)</td>", part)
    return {htmllib.unescape(k): htmllib.unescape(v) for k, v in pairs}


@pytest.fixture(scope="module")
def smollm_report(smollm, tmp_path_factory):
    prompts = [PASSWORD, MARKUP]
    trace = interp.trace(smollm, prompts, max_new_tokens=GENERATE)
    out = tmp_path_factory.mktemp("report")
    path = build_report(trace, out / "r.html", model=smollm, progress=False)
    return trace, path.read_text()


@pytest.mark.slow
def test_markup_in_a_prompt_is_shown_as_text(smollm_report):
    _, html = smollm_report
    assert "<script" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in html
    shown = Elements(html).text_by_class["prompt-text"]
    assert MARKUP in shown


@pytest.mark.slow
def test_report_is_self_contained_with_every_section(smollm_report):
    _, html = smollm_report
    assert_self_contained(html)
    assert_sections(html)
    assert html.count("data:image/svg+xml;base64,") >= 8
    # The analyses a live trace feeds in: induction, deltas, logit lens, journey.
    assert "Induction heads (score and ablation evidence both)" in html
    assert "writes per layer, medians without the sink" in html
    assert 'alt="logit lens of P1"' in html and "decision depth by position" in html
    assert "Follows &#39;\u2423is&#39; at position 15." in html  # its leading space shown
    assert ": not available:" not in html


@pytest.mark.slow
def test_report_states_seed_and_command(smollm_report):
    trace, html = smollm_report
    assert "<dt>seed</dt><dd>0 (greedy decoding" in html
    assert trace.meta["command"].split()[0] in html


@pytest.mark.slow
def test_coverage_section_shows_the_analysis_numbers(smollm, smollm_report):
    """Per prompt: the numbers and token masses `interp.analysis.coverage` gives for the same
    trace, the most read tokens, the causal check and its verdict; no placeholder left."""
    trace, html = smollm_report
    cov = cv.coverage(trace.query_attention, trace.tokens, bos_id=smollm.tokenizer.bos_token_id)
    part = section(html, "coverage")
    assert "Not available" not in part and "did not run" not in part
    assert 'alt="prompt-key coverage by layer"' in part
    panes = part.split('<div class="pane">')[1:]
    assert len(panes) == 2
    for p, pane in enumerate(panes):
        numbers = cells(pane)
        row = cov.summary.iloc[p]
        for column, name in SUMMARY.items():  # coverage, effective coverage, keys_90, sink
            assert numbers[name] == fmt(row[column])
        assert numbers["prompt keys (without the sink)"] == fmt(int(row["keys"]))
        # Every prompt token is shaded with its mass, in order; the sink has none.
        shown = [
            (int(k), float(m)) for k, m in re.findall(r'title="pos (\d+) \| mass (\S+) ', pane)
        ]
        keys = cov.keys[(cov.keys["prompt"] == p) & ~cov.keys["sink"]]
        assert [k for k, _ in shown] == keys["pos"].tolist()
        assert [m for _, m in shown] == [float(f"{m:.3g}") for m in keys["mass"]]
        assert 'title="pos 0 | sink: its share is the sink mass' in pane
    # The password prompt: the answer reads the token that opens " 7391" most, at more than
    # twice the uniform share, and some head reads every digit at over 4x the uniform level.
    keys = cov.keys[(cov.keys["prompt"] == 0) & ~cov.keys["sink"]].set_index("pos")
    assert keys["token"].iloc[:7].tolist() == [" password", " is", " ", "7", "3", "9", "1"]
    assert keys["mass"].idxmax() == 3 and keys.loc[3, "mass"] > 2 / len(keys)
    assert keys.loc[4:7, "covered"].all()
    top_rows = re.findall(r'<tr><td class="num">(\d+)</td><td>(.*?)</td>', panes[0])
    assert top_rows[0] == ("3", "\u2423")  # the most read prompt tokens, a blank one marked
    # The markup prompt's tokens stay text in the coverage pane too.
    assert "<script" not in part and "&lt;" in part


@pytest.mark.slow
def test_coverage_causal_check_matches_the_coverage_command(smollm, smollm_report):
    """The same blocking check and verdict as `interp coverage PROMPT --generate N`."""
    from interp.runs.coverage import measure

    _, html = smollm_report
    measured = measure(smollm, PASSWORD, generate=GENERATE)
    causal = measured["causal"].set_index("blocked")
    pane = section(html, "coverage").split('<div class="pane">')[1]
    for name in ("uncovered", "top"):
        row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", pane).group(1)
        values = [htmllib.unescape(v) for v in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        expected = causal.loc[name]
        assert values[:4] == [fmt(int(expected["n_keys"])), expected["keys"],
                              fmt(expected["delta"]), fmt(expected["delta_per_token"])]  # fmt: skip
        assert values[4] == repr(measured["blocked_text"][name])
    found = verdict(measured["causal"])
    assert f"Coverage is {found}" in pane
    summary = cells(section(html, "summary"))
    assert summary["coverage verdict"] == found
    eff = fmt(float(measured["coverage"].summary["effective_coverage"].iloc[0]))
    assert summary["effective coverage exp(H(mass)) / keys"] == eff


@pytest.mark.slow
def test_saved_trace_rebuilds_the_report(smollm, tmp_path):
    trace = interp.trace(smollm, "The password is 7391. The password is", max_new_tokens=2)
    save_trace(trace, tmp_path / "with", model=smollm)
    trace.save(tmp_path / "plain")
    with_derived = build_report(
        interp.Trace.load(tmp_path / "with"), tmp_path / "a.html", progress=False
    ).read_text()
    assert "Induction heads (score and ablation evidence both)" in with_derived
    plain = build_report(
        interp.Trace.load(tmp_path / "plain"), tmp_path / "b.html", progress=False
    ).read_text()
    assert_sections(plain)
    assert "Induction heads: not available: not saved with this trace" in plain
    assert "Logit lens: not available: not saved with this trace" in plain
    assert "Follows &#39;" in with_derived and "Follows &#39;" not in plain
    assert section(with_derived, "coverage").count('<p class="info">Coverage is ') == 1
    assert "Not available for this report: not saved with this trace" in section(plain, "coverage")
    # Both reports read the same frames: the token table is identical.
    for html in (with_derived, plain):
        assert "7391" in html


@pytest.mark.slow
def test_cli_writes_the_report(smollm, tmp_path, monkeypatch, capsys):
    from interp.cli import main

    monkeypatch.setattr(interp, "load", lambda name, **options: smollm)
    monkeypatch.setattr("interp.cli.COMMANDS", ["report"])
    out = tmp_path / "cli.html"
    argv = ["report", "Hi there", "Bye", "--generate", "1", "--seed", "3", "-o", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    html = out.read_text()
    assert "interp report &#39;Hi there&#39; Bye --model smollm2-135m" in html
    assert "<dt>seed</dt><dd>3 (greedy" in html
    assert main(["report", "x", "-o", str(tmp_path / "x.txt")]) == 2
    assert "name it" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    from transformers import AutoModelForCausalLM, OlmoeConfig

    config = OlmoeConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        num_experts=8, num_experts_per_tok=2,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("olmoe")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return interp.load(str(path))


def test_moe_report_from_token_ids(tiny_moe, tmp_path):
    """A model without a tokenizer, with experts: every section renders, none fails."""
    ids = torch.randint(10, 101, (2, 12), generator=torch.Generator().manual_seed(0))
    trace = interp.trace(tiny_moe, ids, max_new_tokens=2)
    html = build_report(trace, tmp_path / "moe.html", model=tiny_moe, progress=False).read_text()
    assert_sections(html)
    assert_self_contained(html)
    assert "8 per MoE layer, top-2, in 2 of 2 layers" in html
    assert "expert balance (1 = uniform)" in html
    assert "how differently the prompts use the experts" in html
    assert section(html, "coverage").count('<p class="info">Coverage is ') == 2  # no tokenizer


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    write_atomic(target, "old report")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(InterpError, match="No space left on device"):
        write_atomic(target, "new report")
    assert target.read_text() == "old report"
    assert os.listdir(tmp_path) == ["r.html"]  # no temporary file left behind

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "other.html", "x")
    assert os.listdir(tmp_path) == ["r.html"]


def test_unwritable_path_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(InterpError) as err:
        write_atomic(blocker / "r.html", "x")
    assert "\n" not in str(err.value) and f"cannot write {blocker}" in str(err.value)
    with pytest.raises(InterpError, match="is a directory"):
        build_report(interp.Trace([], {"cfg": {}}), tmp_path, progress=False)


def test_missing_captures_become_notes(tiny_moe, tmp_path, capsys):
    """No attention, no routing, no generation, no model: notes where the data would be."""
    ids = torch.arange(10, 22)[None]
    trace = interp.trace(tiny_moe, ids, capture=("residual",))
    html = build_report(trace, tmp_path / "thin.html").read_text()
    assert_sections(html)
    assert "Attention was not captured in this trace." in html
    assert "Routing was not captured in this trace." in html
    assert "Not available for this report: attention was not captured in this trace." in html
    assert "Induction heads: not available: the induction probe runs the model" in html
    assert "report:" in capsys.readouterr().err  # the progress bar
