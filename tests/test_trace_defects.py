"""The trace defects of issue 13, each checked against what the model itself computes.

Every test here failed on the tree before the restructure (10629a6) and passes now.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import interp
from interp.analysis.attribution import direct_logit_attribution, final_norm
from interp.errors import InterpError

LAYER, HEAD = 1, 2


@pytest.fixture(scope="module")
def moe():
    return interp.load("tiny-moe")


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(10, 200, (n,), generator=torch.Generator().manual_seed(seed))


def _zero_head(z, hook):
    z[:, :, HEAD] = 0.0  # z [batch pos head d_head]
    return z


def test_capture_records_the_ablated_head(moe):
    """Zeroing one head's z: the trace holds the zero the model used, and direct logit
    attribution gives that head 0 while the bias row stays what the weights say."""
    ids = _ids(10)
    hook = (f"blocks.{LAYER}.attn.hook_z", _zero_head)
    trace = interp.trace(moe, ids, fwd_hooks=[hook])
    z = trace.tensor("z")  # [layer pos head d_head]
    assert torch.count_nonzero(z[LAYER, :, HEAD]) == 0
    assert torch.count_nonzero(z[LAYER, :, HEAD - 1]) > 0
    # The logits the trace kept are the ablated model's, computed by TL independently.
    with moe.hooks(fwd_hooks=[hook]):
        ablated = moe(ids[None])[0, -1]
    assert torch.allclose(trace.records[0].query_logits[0], ablated, atol=1e-4)

    frame = direct_logit_attribution(trace, final_norm(moe))
    row = frame.set_index("component").logit
    assert row[f"L{LAYER}H{HEAD}"] == 0.0
    # tiny-moe has no attention output bias and an RMS final norm: the bias row is b_U alone.
    target = int(frame.target_id.iloc[0])
    assert row["bias"] == pytest.approx(float(moe.b_U[target]), abs=1e-4)


def test_capture_records_a_patched_residual_position(moe):
    ids = _ids(10)
    patch = torch.linspace(-1, 1, moe.cfg.d_model)

    def patch_pos_3(resid, hook):
        resid[:, 3] = patch  # resid [batch pos d_model]
        return resid

    trace = interp.trace(moe, ids, fwd_hooks=[("blocks.2.hook_resid_pre", patch_pos_3)])
    resid = trace.tensor("resid")  # [layer+1 pos d_model]
    assert torch.equal(resid[2, 3], patch)
    clean = interp.trace(moe, ids).tensor("resid")
    assert torch.equal(resid[2, 2], clean[2, 2]) and not torch.equal(resid[2, 3], clean[2, 3])


def test_position_patch_while_generating_is_a_clear_error(moe):
    def patch_pos_5(resid, hook):
        resid[:, 5] = 0.0
        return resid

    hooks = [("blocks.1.hook_resid_pre", patch_pos_5)]
    assert interp.trace(moe, _ids(8), fwd_hooks=hooks).tensor("resid").shape[1] == 8
    with pytest.raises(InterpError, match="one forward per new token"):
        interp.trace(moe, _ids(8), fwd_hooks=hooks, max_new_tokens=2)


def test_query_positions_typo_is_an_error(moe):
    with pytest.raises(InterpError, match="query_positions"):
        interp.trace(moe, _ids(6), query_positions="al")


def test_full_attention_that_cannot_fit_is_refused_before_the_run(moe, monkeypatch):
    real = os.sysconf

    def little_free(name):  # 1 MiB of free memory
        return 256 if name == "SC_AVPHYS_PAGES" else real(name)

    monkeypatch.setattr(os, "sysconf", little_free)
    # 4 layers x 4 heads x 200^2 x 4 bytes = 2.6 MB of patterns: refused by trace(), not later
    # when a frame is read.
    with pytest.raises(InterpError, match="GiB is free"):
        interp.trace(moe, _ids(200), query_positions="all")
    monkeypatch.setattr(os, "sysconf", real)
    assert interp.trace(moe, _ids(200), query_positions="all").tensor("patterns").shape[-1] == 200


def test_attention_past_the_budget_is_empty_and_says_so(moe):
    trace = interp.trace(moe, _ids(40), attention_budget_mb=0.01)
    assert "attention" in trace.meta["empty_frames"]
    with pytest.warns(UserWarning, match="trace.attention is empty"):
        assert trace.attention.empty
    assert not trace.query_attention.empty  # what the budget still keeps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not interp.trace(moe, _ids(40)).attention.empty


def test_bad_hook_name_names_close_matches(moe):
    with pytest.raises(InterpError, match=r"blocks\.0\.attn\.hook_z\b"):
        interp.trace(moe, _ids(4), fwd_hooks=[("blocks.0.attn.hook_zz", _zero_head)])


def test_meta_lists_shapes_when_asked(moe):
    trace = interp.trace(moe, _ids(4), capture=["residual", "shapes"])
    assert trace.meta["capture"] == ["residual", "shapes"]
    assert not trace.shapes.empty


def test_command_is_recorded_only_by_the_cli(moe, tmp_path, monkeypatch):
    from interp.cli import main

    assert interp.trace(moe, _ids(4)).meta["command"] is None
    monkeypatch.setattr(interp, "load", lambda name, **options: moe)
    out = tmp_path / "r.html"
    assert main(["report", "Hi", "--model", "tiny-moe", "-o", str(out), "--no-progress"]) == 0
    command = "interp report Hi --model tiny-moe --device auto --dtype auto --generate 0"
    assert command in out.read_text()


def test_import_keeps_the_matplotlib_backend():
    """A notebook's backend survives importing every figure module and the report."""
    code = (
        "import importlib, pkgutil, matplotlib, interp.plots, interp.report\n"
        "for m in pkgutil.iter_modules(interp.plots.__path__, 'interp.plots.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(matplotlib.get_backend())"
    )
    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "svg"
