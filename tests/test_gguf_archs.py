"""GGUF files of architectures interp's own converter does not read go through transformers'
GGUF support (dequantising), cached as safetensors; on a llama file both readers agree."""

from __future__ import annotations

import pytest
import torch
from tiny_gguf import write_tiny_gguf

import interp
from interp.errors import InterpError
from interp.models import gguf_checkpoint

IDS = torch.tensor([5, 257, 80, 33, 101, 257, 7])


def _transformers_logits(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32).eval()  # fmt: skip
    with torch.no_grad():
        return model(IDS[None]).logits[0]


def test_qwen2_gguf_loads_by_path_with_transformers_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "tiny-qwen2.gguf", arch="qwen2", d_model=32, layers=2)
    model = interp.load(str(path))
    assert model.cfg.n_layers == 2 and "Qwen2" in type(model.original_model).__name__
    trace = interp.trace(model, IDS, capture=("residual",))
    logits = trace.readout(trace.tensor("resid")[-1])
    torch.testing.assert_close(logits, _transformers_logits(path), atol=1e-5, rtol=1e-5)
    assert (tmp_path / "cache").exists() and any((tmp_path / "cache").glob("gguf-hf-*"))
    # The text side: the tokenizer the GGUF carries, encoded as it says.
    ids = interp.trace(model, "tt t", capture=()).records[0].ids.tolist()
    assert ids == model.tokenizer("tt t")["input_ids"]


def test_both_readers_give_the_same_llama_logits(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "tiny-llama.gguf", d_model=32, layers=2)
    ours = interp.load(str(gguf_checkpoint(path)))
    theirs = interp.load(str(gguf_checkpoint(path, reader="transformers")))
    assert gguf_checkpoint(path) != gguf_checkpoint(path, reader="transformers")
    a = interp.trace(ours, IDS, capture=("residual",))
    b = interp.trace(theirs, IDS, capture=("residual",))
    torch.testing.assert_close(a.readout(a.tensor("resid")[-1]), b.readout(b.tensor("resid")[-1]),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_an_architecture_neither_reads_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "odd.gguf", arch="mamba-tiny")
    with pytest.raises(InterpError, match="GGUF architecture 'mamba-tiny' is not supported"):
        interp.load(str(path))
    assert not any((tmp_path / "cache").glob("gguf*"))
