"""Shared fixtures: each real model is loaded once per test session."""

from __future__ import annotations

import pytest
import torch

torch.set_grad_enabled(False)


@pytest.fixture(scope="session")
def smollm():
    import interp

    return interp.load("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_reference():
    """transformers' own GGUF reader: an implementation independent of ours."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.models.zoo import smollm2_gguf

    path = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer
