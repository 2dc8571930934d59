"""The example notebook runs top to bottom, offline, on the interpreter running the tests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import HANG_S

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_hooks.ipynb"
KERNEL = "interp-test-python"


@pytest.fixture
def kernel_for_this_python(tmp_path, monkeypatch) -> str:
    """A kernelspec that launches sys.executable, found first through JUPYTER_PATH.

    Whatever "python3" means on the machine (a system Python without torch, another venv), the
    notebook must run in the environment the package was installed into.
    """
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    # The model is embedded: the kernel must never reach for the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return KERNEL


def test_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_notebook_runs(kernel_for_this_python):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel_for_this_python,
        timeout=HANG_S,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    text = "\n".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "30 layers, 9 query heads sharing 3 KV heads" in text
    # The ablation cell reports p(answer) before -> after; ablating the strongest direct writer
    # must lower it.
    line = next(row for row in text.splitlines() if row.startswith("p(' Paris'):"))
    before, after = (float(x) for x in line.split(":")[1].split(";")[0].split("->"))
    assert after < before
    figures = [
        out
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert figures, "the notebook draws a figure"
    # trace.show: the interactive view, as one sandboxed offline page holding its own data.
    views = [
        out["data"]["text/html"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.get("data", {}).get("text/html", "").startswith("<iframe srcdoc=")
    ]
    assert len(views) == 1 and 'data-kind="attention"' in views[0].replace("&quot;", '"')
