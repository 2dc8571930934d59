"""The views' data, without a browser: packing, escaping, sparse attention rows against the
trace's patterns, and the notebook wrapper. (tests/test_views_browser.py drives Chromium.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import interp
from interp.errors import InterpError
from interp.report.views import View, page, show
from interp.report.views.data import sparse_rows
from interp.report.views.encode import DTYPES, pack, script_json, unpack


@pytest.fixture(scope="module")
def trace():
    model = interp.load("tiny-moe")
    return interp.trace(model, ["def f(x): return x + 1", "the cat sat"], max_new_tokens=2)


def test_pack_round_trips_every_dtype():
    rng = np.random.default_rng(0)
    for dtype, numpy_type in DTYPES.items():
        values = (rng.random(1000) * 250).astype(numpy_type)
        packed = pack(values, dtype)
        assert packed["n"] == 1000 and np.array_equal(unpack(packed), values)
        assert pack(values, dtype) == packed  # the same numbers, the same bytes


def test_script_json_cannot_close_its_script_element():
    payload = {"tokens": ["</script><script>alert(1)</script>", "<!--", "a\u2028b", "&amp;"]}
    text = script_json(payload)
    assert not {"<", ">", "&", "\u2028"} & set(text)
    assert json.loads(text) == payload


def test_sparse_rows_hold_the_patterns_to_a_quantisation_step(trace):
    patterns = trace.tensor("patterns", 0)  # [layer head query key]
    rows = sparse_rows(list(patterns))
    counts, keys, levels = (unpack(rows[k]) for k in ("counts", "keys", "weights"))
    dense = np.zeros(patterns.shape).reshape(-1, patterns.shape[-1])
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    for r in range(len(counts)):
        dense[r, keys[starts[r] : starts[r + 1]]] = levels[starts[r] : starts[r + 1]] / 255
    error = np.abs(dense - patterns.reshape(dense.shape).numpy())
    # 12 tokens < 32 kept keys: every row whole; a dropped weight is one under half a step.
    assert error.max() <= 0.5 / 255 + 1e-7
    assert counts.max() <= patterns.shape[-1]


def test_sparse_rows_keep_the_heaviest_keys():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 1, 40, 40))
    weights = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    rows = sparse_rows(list(torch.from_numpy(weights)), keep=4)
    counts, keys = unpack(rows["counts"]), unpack(rows["keys"])
    assert list(counts) == [4] * 40
    heaviest = np.argsort(-weights[0, 0], axis=-1)[:, :4]
    assert [set(keys[4 * q : 4 * q + 4]) for q in range(40)] == [set(h) for h in heaviest]


def test_views_refuse_what_they_cannot_show(trace, tmp_path):
    with pytest.raises(InterpError, match="unknown view 'heads'"):
        show(trace, "heads")
    with pytest.raises(InterpError, match=r"outside the traced prompts \[0, 2\)"):
        show(trace, "attention", prompt=2)
    trace.save(tmp_path / "saved")
    with pytest.raises(InterpError, match="live trace"):
        interp.Trace.load(tmp_path / "saved").show("lens")


def test_notebook_html_is_a_sandboxed_page(trace):
    view = trace.show("attention", prompt=[0, 1])
    assert isinstance(view, View) and [label for label, _ in view.panes] == ["P1", "P2"]
    cell = view._repr_html_()
    # One element: the page lives, escaped, in srcdoc; scripts run, but not as the notebook.
    assert cell.startswith("<iframe srcdoc=") and cell.count("<") == 2
    assert 'sandbox="allow-scripts"' in cell and "allow-same-origin" not in cell
    assert "&lt;script&gt;" in cell


def test_fragment_escapes_labels_and_assets_never_close_their_element():
    html = page.fragment("lens", [("<b>P1</b>", {"tokens": ["</script>"]})], "x")
    assert "<b>" not in html and "&lt;b&gt;P1&lt;/b&gt;" in html
    assert html.count("</script>") == 1  # the data block's own end
    code = page.assets()
    assert code.lower().count("</script") == 1 and code.lower().count("</style") == 1
