"""interp.load against independent references: transformers' GGUF reader and HF classes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import HANG_S

import interp
from interp.errors import InterpError
from interp.models.zoo import smollm2_gguf

PROMPTS = {
    "english": "The capital of France is",
    "code": "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "korean": "대한민국의 수도는 서울이고, 일본의 수도는",
    "numbers": "1, 1, 2, 3, 5, 8, 13, 21, 34,",
}


def _chat(tokenizer) -> str:
    return interp.prompts.format_prompt(tokenizer, "What is 7 times 6?", chat=True)


@pytest.mark.slow
def test_smollm_facts(smollm):
    cfg = smollm.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_mlp, cfg.n_heads) == (30, 576, 1536, 9)
    assert (cfg.n_key_value_heads, cfg.d_head, cfg.d_vocab) == (3, 64, 49152)
    hf = smollm.original_model.config
    assert hf.rope_parameters["rope_theta"] == 100000.0
    assert hf.rms_norm_eps == pytest.approx(1e-5)
    assert hf.tie_word_embeddings
    assert smollm.tokenizer.bos_token_id == 1 and smollm.tokenizer.eos_token_id == 2
    assert "blocks.29.attn.hook_pattern" in smollm.hook_dict


@pytest.mark.slow
def test_smollm_logits_match_transformers_gguf(smollm, smollm_reference):
    reference, ref_tokenizer = smollm_reference
    texts = [*PROMPTS.values(), _chat(smollm.tokenizer)]
    for text in texts:
        ids = smollm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        diff = (smollm(ids) - reference(ids).logits).abs().max().item()
        assert diff <= 1e-3, (text, diff)


@pytest.mark.slow
def test_tokenizer_ids_match_transformers_gguf(smollm, smollm_reference):
    _, ref_tokenizer = smollm_reference
    texts = [*PROMPTS.values(), _chat(smollm.tokenizer), "  spaces\tand\nnewlines  ", "7391"]
    for text in texts:
        ours = smollm.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ours == ref_tokenizer(text, add_special_tokens=False)["input_ids"], text
    # SmolLM2 splits every digit on its own. The GGUF says add_bos_token=False, so interp's
    # encoder adds no BOS (TL's bridge wraps the tokenizer to prepend one by default).
    assert len(smollm.tokenizer("7391", add_special_tokens=False)["input_ids"]) == 4
    ids = interp.prompts.encode(smollm.tokenizer, "Hi", smollm.cfg.n_ctx)
    assert ids.tolist() == ref_tokenizer("Hi", add_special_tokens=False)["input_ids"]
    assert ids[0] != smollm.tokenizer.bos_token_id


@pytest.mark.slow
def test_greedy_generation_with_kv_cache_matches_transformers(smollm, smollm_reference):
    """Catches the transformers 5.24.0 regression (bridge KV-cache generate degenerates)."""
    reference, _ = smollm_reference
    ids = smollm.tokenizer(PROMPTS["english"], return_tensors="pt")["input_ids"]
    ours = smollm.generate(
        ids, max_new_tokens=20, do_sample=False, use_past_kv_cache=True, return_type="tokens",
        verbose=False,
    )  # fmt: skip
    theirs = reference.generate(ids, max_new_tokens=20, do_sample=False)
    assert ours[0].tolist() == theirs[0].tolist()
    assert "Paris" in smollm.tokenizer.decode(ours[0, ids.shape[1] :])


def _tiny_configs():
    from transformers import LlamaConfig, MixtralConfig, OlmoeConfig, Qwen3MoeConfig

    common = dict(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    moe = dict(num_experts_per_tok=2, output_router_logits=False)
    return {
        "llama": LlamaConfig(**common),
        "olmoe": OlmoeConfig(**common, num_experts=8, **moe),
        "qwen3_moe": Qwen3MoeConfig(
            **common, num_experts=8, moe_intermediate_size=24, decoder_sparse_step=1, **moe
        ),
        "mixtral": MixtralConfig(**common, num_local_experts=8, **moe),
    }


@pytest.mark.parametrize("kind", ["llama", "olmoe", "qwen3_moe", "mixtral"])
def test_random_hf_checkpoint_loads_from_directory(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = _tiny_configs()[kind]
    config._attn_implementation = "eager"
    reference = AutoModelForCausalLM.from_config(config).eval()
    reference.save_pretrained(tmp_path)
    model = interp.load(str(tmp_path))
    ids = torch.randint(0, 97, (2, 11))
    diff = (model(ids) - reference(ids).logits).abs().max().item()
    assert diff <= 1e-4
    assert model.cfg.n_layers == 2 and model.tokenizer is None


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(InterpError, match="no config.json"):
        interp.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InterpError, match="not valid JSON"):
        interp.load(str(tmp_path))
    with pytest.raises(InterpError, match="not a model directory"):
        interp.load(str(tmp_path / "missing"))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_config(_tiny_configs()["llama"])
    reference.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InterpError, match="cannot load the checkpoint"):
        interp.load(str(tmp_path))


def test_truncated_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    broken = tmp_path / "broken.gguf"
    with smollm2_gguf().open("rb") as f:
        broken.write_bytes(f.read(3_000_000))
    with pytest.raises(InterpError, match="GGUF"):
        interp.load(str(broken))
    assert not list((tmp_path / "cache").glob("gguf-*")), "no half-written cache entry"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=HANG_S,
    )  # fmt: skip


def test_cli_unknown_model_is_one_line_exit_2():
    result = _cli(
        "generate", "hi", "--model", "no-such-org/no-such-model", env={"HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "smollm2-135m" in lines[0] and "Traceback" not in result.stderr


def test_cli_empty_prompt_is_one_line_exit_2():
    result = _cli("generate", "   ")
    assert result.returncode == 2 and result.stderr.strip() == "interp: error: the prompt is empty"


def test_cli_models_lists_the_zoo():
    result = _cli("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    smol = rows["smollm2-135m"]
    assert (smol["layers"], smol["heads"], smol["kv_heads"], smol["vocab"]) == (30, 9, 3, 49152)
    assert 130e6 < smol["params"] < 140e6


def test_a_second_load_is_an_independent_model(smollm):
    """The second load reuses the verified cache; hooks and weight edits on one model never
    reach the other."""
    other = interp.load("smollm2-135m")
    ids = torch.tensor([[1, 504, 3458, 282]])
    want = smollm(ids)
    assert torch.equal(other(ids), want)
    with other.hooks(fwd_hooks=[("blocks.3.hook_resid_post", lambda t, hook: t * 0)]):
        assert not torch.equal(other(ids), want)
        assert torch.equal(smollm(ids), want)
    other.original_model.lm_head.weight.data.zero_()  # tied: the embedding is zeroed too
    assert torch.equal(smollm(ids), want) and other(ids).abs().max() == 0
