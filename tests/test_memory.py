"""The per-layer memory frame: the formula equals the bytes held by transformers' real cache
object at every step (prompt and each generated token), for the zoo models and for tiny random
checkpoints of every layer kind interp reads (full, sliding, MLA, Mamba2)."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.trace.kv_cache import kv_cache_bytes
from interp.trace.memory import KINDS, formula

COMMON = dict(vocab_size=101, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=64)  # fmt: skip


def _config(name: str):
    import transformers as T

    return {
        "llama": lambda: T.LlamaConfig(**COMMON, num_hidden_layers=2, intermediate_size=48),
        # every layer slides over a 4-token window
        "mistral": lambda: T.MistralConfig(**COMMON, num_hidden_layers=2, intermediate_size=48,
                                           sliding_window=4),
        # sliding and full layers alternate
        "qwen2": lambda: T.Qwen2Config(**COMMON, num_hidden_layers=2, intermediate_size=48,
                                       use_sliding_window=True, sliding_window=4,
                                       layer_types=["sliding_attention", "full_attention"]),
        # multi-head latent attention: keys and values of other widths than d_head
        "deepseek_v3": lambda: T.DeepseekV3Config(
            **{**COMMON, "num_key_value_heads": 4}, num_hidden_layers=2, intermediate_size=48,
            moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, n_group=2,
            topk_group=1, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16,
            qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8),
    }[name]()  # fmt: skip


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2", "deepseek_v3", "nemotron_h"])
def tiny(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    if request.param == "nemotron_h":
        return request.param, request.getfixturevalue("tiny_nemotron_h")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    AutoModelForCausalLM.from_config(_config(request.param)).save_pretrained(path)
    return request.param, interp.load(str(path))


def _check(trace) -> None:
    memory, facts = trace.memory, trace.facts
    assert len(memory) and (memory.bytes == memory.measured_bytes).all(), memory
    for row in memory.itertuples():
        n = len(trace.records[row.prompt].ids) - (trace.meta["max_new_tokens"] - row.step)
        assert formula(facts, row.kind, n)["bytes"] == row.bytes
        assert row.entries * KINDS[row.kind].entry_bytes(facts) == row.bytes
    # The per-step totals are the frame's sums.
    kv = trace.kv_cache
    sums = memory[memory.step > 0].groupby(["prompt", "step"]).measured_bytes.sum()
    assert list(kv.measured_bytes) == list(sums)
    assert list(kv.bytes) == [kv_cache_bytes(facts, n)[0] for n in kv.positions]


def test_formula_equals_the_real_cache_at_every_step(tiny):
    name, model = tiny
    ids = torch.randint(3, 101, (6,), generator=torch.Generator().manual_seed(1))
    trace = interp.trace(model, ids, max_new_tokens=4)
    _check(trace)
    memory = trace.memory
    kinds = set(memory.kind)
    by_kind = {kind: memory[memory.kind == kind] for kind in kinds}
    if "kv" in kinds:  # one entry per token: 6 after the prompt, 10 after 4 new tokens
        assert sorted(set(by_kind["kv"].entries)) == list(range(6, 11))
    if "sliding_kv" in kinds:  # transformers keeps window - 1 = 3 tokens
        assert set(by_kind["sliding_kv"].entries) == {3}
    if name == "nemotron_h":
        assert kinds == {"kv", "ssm_state", "conv_state"}
        assert sorted(set(memory.layer)) == [0, 2, 3]  # Mamba and attention layers only
        for kind in ("ssm_state", "conv_state"):  # a fixed state, whatever the length
            assert by_kind[kind].bytes.nunique() == 1
    expected = {
        "llama": {"kv"},
        "mistral": {"sliding_kv"},
        "qwen2": {"sliding_kv", "kv"},
        "deepseek_v3": {"kv"},
        "nemotron_h": {"kv", "ssm_state", "conv_state"},
    }
    assert kinds == expected[name]  # fmt: skip


@pytest.mark.parametrize(
    "name",
    # attn-only-1l/2l (interp's native models) hand back no cache object to measure.
    ["tiny-moe", "tiny-deepseek", pytest.param("smollm2-135m", marks=pytest.mark.slow)],
)
def test_zoo_models_formula_equals_the_real_cache(name):
    model = interp.load(name)
    ids = torch.randint(3, 50, (7,), generator=torch.Generator().manual_seed(2))
    trace = interp.trace(model, ids, max_new_tokens=3)
    _check(trace)


def test_facts_from_the_config_alone_hold_the_same_memory(tiny):
    # ModelFacts.of_config (full-size configs, no bridge) lays out the trace's memory.
    from interp.trace.facts import ModelFacts
    from interp.trace.memory import layer_memory

    name, model = tiny
    facts = ModelFacts.of(model)
    alone = ModelFacts.of_config(model.original_model.config, facts.dtype)
    assert layer_memory(alone) == layer_memory(facts)
    for field in ("n_key_value_heads", "d_head", "memory_shapes", "n_streams", "dtype"):
        assert getattr(alone, field) == getattr(facts, field), field


def test_own_cache_formula_equals_transformers_forward(tiny):
    # Without the bridge (a fresh model: the bridge wraps the modules of the one it loaded),
    # transformers' own forward: MLA caches its latent (mla_latent), which a trace (TL's MLA
    # bridge: per-head K and V) does not.
    from transformers import AutoModelForCausalLM

    from interp.trace.facts import ModelFacts
    from interp.trace.memory import layer_memory, registry

    name, model = tiny
    hf = AutoModelForCausalLM.from_config(model.original_model.config).eval()
    facts = ModelFacts.of_config(hf.config, "float32")
    for n in (1, 5, 9):
        with torch.no_grad():
            cache = hf(torch.arange(3, 3 + n)[None], use_cache=True).past_key_values
        for layer, kind, sub in layer_memory(facts, own_cache=True):
            measured = registry()[kind].measure(cache.layers[layer])
            assert formula(facts, kind, n, sub)["bytes"] == measured, (name, layer, kind, n)
    kinds = {kind for _, kind, _ in layer_memory(facts, own_cache=True)}
    assert ("mla_latent" in kinds) == (name == "deepseek_v3")


def test_mamba_state_is_float32_in_a_bfloat16_model(tmp_path):
    # transformers' chunked scan computes the SSM state in float32 whatever the model's dtype;
    # the conv window stays in the model's.
    from conftest import nemotron_h_config
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(nemotron_h_config()).save_pretrained(tmp_path)
    model = interp.load(str(tmp_path), dtype="bfloat16")
    trace = interp.trace(model, torch.tensor([3, 17, 42, 8]), max_new_tokens=3)
    assert trace.facts.dtype == "bfloat16"
    _check(trace)
    by_kind = trace.memory.groupby("kind").bytes.first()
    assert by_kind["ssm_state"] == 4 * 8 * 8 * 4  # heads x d_head x state x float32
    assert by_kind["conv_state"] == 4 * (4 * 8 + 2 * 2 * 8) * 2  # taps x channels x bf16
