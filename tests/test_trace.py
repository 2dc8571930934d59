"""Every trace frame checked against an independent computation."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.errors import InterpError
from interp.trace.kv_cache import kv_cache_bytes
from interp.trace.sampling import Sampling


def _tiny(tmp_path_factory, kind: str):
    from transformers import (
        AutoModelForCausalLM,
        LlamaConfig,
        MixtralConfig,
        OlmoeConfig,
        Qwen3MoeConfig,
    )

    common = dict(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    moe = dict(num_experts_per_tok=2)
    config = {
        "llama": lambda: LlamaConfig(**common),
        "olmoe": lambda: OlmoeConfig(**common, num_experts=8, **moe),
        "qwen3_moe": lambda: Qwen3MoeConfig(
            **common, num_experts=8, moe_intermediate_size=24, norm_topk_prob=True, **moe
        ),
        "mixtral": lambda: MixtralConfig(**common, num_local_experts=8, **moe),
    }[kind]()
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp(kind)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return interp.load(str(path))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama")


def _ids(*lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 101, (n,), generator=g) for n in lengths]


def test_residual_writes_add_up_exactly(llama):
    trace = interp.trace(llama, torch.stack(_ids(12, 12)))
    resid = trace.tensor("resid", 1)
    writes = resid[:-1] + trace.tensor("attn_out", 1) + trace.tensor("mlp_out", 1)
    assert torch.equal(writes, resid[1:])
    frame = trace.residual
    assert set(frame.stage) == {"resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"}
    row = frame.query("prompt == 1 and layer == 2 and pos == 5 and stage == 'resid_post'")
    assert row.norm.item() == pytest.approx(resid[3, 5].norm().item(), rel=1e-6)


def test_attention_rows_sum_to_one_and_streaming_matches_full(llama):
    ids = torch.stack(_ids(20, 20))
    full = interp.trace(llama, ids)
    streamed = interp.trace(llama, ids, attention_budget_mb=0)
    assert full.meta["full_attention"] and not streamed.meta["full_attention"]
    sums = full.attention.groupby(["prompt", "layer", "head", "query"]).weight.sum()
    assert (sums - 1).abs().max() < 1e-5
    patterns = full.tensor("patterns", 0)  # [L, H, T, T]
    assert torch.allclose(streamed.tensor("key_mass", 0), patterns.sum(-2), atol=1e-5)
    entropy = -(patterns * patterns.clamp_min(1e-30).log()).sum(-1)
    assert torch.allclose(streamed.tensor("query_entropy", 0), entropy, atol=1e-5)
    assert torch.allclose(streamed.tensor("query_rows", 0)[:, :, 0], patterns[:, :, -1])
    kv = full.attention.drop_duplicates(["head", "kv_head"]).set_index("head").kv_head
    assert kv.to_dict() == {0: 0, 1: 0, 2: 1, 3: 1}  # repeat_interleave, as HF's repeat_kv


def test_padding_never_changes_a_result(llama):
    seqs = _ids(5, 17, 11, seed=3)
    batch = interp.trace(llama, seqs)
    for p, seq in enumerate(seqs):
        alone = interp.trace(llama, [seq])
        for name in ["resid", "patterns", "key_mass", "query_rows", "z"]:
            diff = (batch.tensor(name, p) - alone.tensor(name, 0)).abs().max()
            assert diff <= 1e-4, (name, p, diff)
        assert torch.allclose(
            batch.records[p].logprob, alone.records[0].logprob, atol=1e-4, equal_nan=True
        )


def test_generation_step_equals_full_forward(llama):
    prompt = _ids(7, seed=5)[0]
    sampled = Sampling(temperature=0.8, top_k=20, seed=11)
    gen = interp.trace(llama, [prompt], max_new_tokens=6, sampling=sampled)
    ids = gen.records[0].ids
    assert len(ids) == 13 and gen.tokens.generated.sum() == 6
    full = interp.trace(llama, [ids], query_positions="all")
    patterns = full.tensor("patterns", 0)
    rows = gen.tensor("query_rows", 0)  # queries: last prompt position + each generated one
    for i, q in enumerate(gen.records[0].query_positions):
        assert (rows[:, :, i, : q + 1] - patterns[:, :, q, : q + 1]).abs().max() <= 1e-4
    logits = llama(ids[None])[0]
    positions = gen.records[0].query_positions
    assert (gen.records[0].query_logits - logits[positions]).abs().max() <= 1e-4
    assert (gen.tensor("resid", 0) - full.tensor("resid", 0)).abs().max() <= 1e-4
    assert (gen.tensor("patterns", 0) - patterns).abs().max() <= 1e-4
    again = interp.trace(llama, [prompt], max_new_tokens=6, sampling=sampled)
    assert torch.equal(again.records[0].ids, ids), "a seed reproduces the sample"


def test_raw_hooks_keep_the_asked_name_across_padding_and_generation(llama):
    # hook_post is a TL alias (of mlp.out.hook_in on the bridge): the name asked for is the key.
    raw = ("blocks.1.mlp.hook_post", "blocks.2.attn.hook_pattern")
    seqs = _ids(5, 9, seed=7)
    batch = interp.trace(llama, seqs, capture=raw)
    gen = interp.trace(llama, [seqs[0]], max_new_tokens=4, capture=raw)
    full = interp.trace(llama, [gen.records[0].ids], capture=raw)
    alone = interp.trace(llama, [seqs[0]], capture=raw)
    for name in raw:
        assert batch.tensor(name, 0).shape == alone.tensor(name, 0).shape
        assert (batch.tensor(name, 0) - alone.tensor(name, 0)).abs().max() <= 1e-4
        assert gen.tensor(name, 0).shape == full.tensor(name, 0).shape
        assert (gen.tensor(name, 0) - full.tensor(name, 0)).abs().max() <= 1e-4
    assert batch.tensor("blocks.2.attn.hook_pattern", 0).shape == (4, 5, 5)


def test_sampling_frame_and_kv_cache_bytes(llama):
    gen = interp.trace(llama, _ids(4), max_new_tokens=3)
    steps = gen.sampling
    chosen = steps[steps.chosen]
    assert list(chosen.step) == [1, 2, 3] and (chosen["rank"] == 0).all()  # greedy
    assert steps.groupby("step").size().min() >= 10
    kv = gen.kv_cache
    cfg = llama.cfg
    assert list(kv.positions) == [5, 6, 7]
    assert (kv.bytes == 2 * cfg.n_layers * 2 * cfg.d_head * kv.positions * 4).all()
    assert (kv.bytes == kv.measured_bytes).all(), "formula equals the cache actually held"
    assert (kv.mha_bytes == 2 * kv.bytes).all()  # 4 query heads share 2 KV heads


def test_sampling_distribution_truncates():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    top_k = Sampling(temperature=1.0, top_k=2).distribution(logits)
    assert top_k[2:].sum() == 0 and top_k.sum().item() == pytest.approx(1.0)
    top_p = Sampling(temperature=1.0, top_p=0.7).distribution(logits)
    probs = logits.softmax(-1)
    assert probs[0] < 0.7 < probs[:2].sum()  # so exactly two tokens survive
    assert (top_p[:2] > 0).all() and top_p[2:].sum() == 0
    assert Sampling().distribution(logits).tolist() == [1.0, 0, 0, 0, 0]
    # A temperature just above 0 is greedy in the limit, not nan (found by test_api_fuzz).
    assert Sampling(temperature=2.7e-133).distribution(logits).tolist() == [1.0, 0, 0, 0, 0]
    assert Sampling(temperature=0.7).distribution(logits).tolist() == pytest.approx(
        (logits / 0.7).softmax(-1).tolist()
    )


@pytest.mark.parametrize("kind", ["olmoe", "qwen3_moe", "mixtral"])
def test_routing_matches_hand_computed_router(kind, tmp_path_factory):
    model = _tiny(tmp_path_factory, kind)
    ids = torch.stack(_ids(9, 9, seed=7))
    trace = interp.trace(model, ids, capture=["routing_dense", "blocks.1.mlp.hook_in"])
    routing = trace.routing_dense.query("prompt == 1 and layer == 1")
    hf = model.original_model
    gate = hf.model.layers[1].mlp.gate
    x = trace.tensor("blocks.1.mlp.hook_in", 1).reshape(-1, hf.config.hidden_size)
    logits = x @ gate.weight.T
    probs = logits.softmax(-1)
    top = probs.topk(2, dim=-1)
    weights = top.values / top.values.sum(-1, keepdim=True) if kind != "olmoe" else top.values
    frame_probs = torch.tensor(routing.prob.to_numpy()).reshape(9, 8)
    assert torch.allclose(frame_probs, probs, atol=1e-5)
    chosen = routing[routing.selected].sort_values(["pos", "rank"])
    assert chosen.expert.to_numpy().reshape(9, 2).tolist() == top.indices.tolist()
    applied = torch.tensor(chosen.weight.to_numpy()).reshape(9, 2)
    assert torch.allclose(applied, weights, atol=1e-5)
    # The HF router itself returns the weights it applies: an independent check.
    _, hf_weights, hf_indices = gate(x)
    assert hf_indices.tolist() == top.indices.tolist()
    assert torch.allclose(applied, hf_weights.float(), atol=1e-5)
    # Routing leaves no trace in the KV cache: same bytes as the dense formula.
    gen = interp.trace(model, _ids(4), max_new_tokens=2, capture=["routing"])
    assert (
        gen.kv_cache.measured_bytes
        == gen.kv_cache.positions.map(lambda n: kv_cache_bytes(gen.facts, n)[0])
    ).all()


def test_shapes_show_heads_split_and_gqa(llama):
    shapes = interp.trace(llama, _ids(6)).shapes.set_index("hook")
    assert shapes.loc["blocks.0.attn.hook_q", "shape"] == [1, 6, 4, 8]
    assert shapes.loc["blocks.0.attn.hook_k", "shape"] == [1, 6, 2, 8]  # GQA: 2 KV heads
    assert (
        shapes.loc["blocks.0.attn.hook_pattern", "dims"] == "batch, head_index, query_pos, key_pos"
    )
    assert shapes.loc["blocks.0.hook_attn_out", "dims"] == "batch, pos, d_model"


def test_save_and_load_round_trip(llama, tmp_path):
    trace = interp.trace(llama, _ids(8), max_new_tokens=2)
    loaded = interp.Trace.load(trace.save(tmp_path / "t"))
    for name in ["tokens", "residual", "attention", "sampling", "kv_cache"]:
        assert loaded.frame(name).reset_index(drop=True).equals(trace.frame(name)), name
    assert loaded.meta["sampling"] == trace.meta["sampling"]


def test_bad_requests_are_one_line_errors(llama):
    with pytest.raises(InterpError, match="max_new_tokens"):
        interp.trace(llama, _ids(4), max_new_tokens=-1)
    with pytest.raises(InterpError, match="unknown capture 'blocks.99.hook_resid_pre'"):
        interp.trace(llama, _ids(4), capture=["blocks.99.hook_resid_pre"])
    with pytest.raises(InterpError, match="context is 64"):
        interp.trace(llama, _ids(60), max_new_tokens=10)
    with pytest.raises(InterpError, match="token ids"):
        interp.trace(llama, [torch.tensor([5, 500])])


@pytest.mark.slow
def test_a_blank_prompt_is_one_line_error(smollm):
    """Text needs a tokenizer: the tiny test models have none."""
    with pytest.raises(InterpError, match="empty"):
        interp.trace(smollm, "   ")
