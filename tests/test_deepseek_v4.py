"""DeepSeek-V4 (several residual streams, compressed attention, hash and top-k routing) traced
with generation on a tiny random checkpoint, against transformers' own modules."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from test_router_families import _expert_output, _shared_outputs

import interp
from interp.analysis.streams import mixing_gain
from interp.trace import streams
from interp.trace.routers import routers

IDS = torch.tensor([3, 17, 42, 8, 99, 23, 5, 61, 9, 11])


@pytest.fixture(scope="module")
def traced(tiny_deepseek_v4):
    return interp.trace(tiny_deepseek_v4, IDS, max_new_tokens=3)


def test_facts_name_kinds_streams_and_routers(traced):
    facts = traced.facts
    assert facts.n_streams == 4
    assert facts.layer_kinds == [
        ("sliding_attention", "hash_moe"), ("compressed_sparse_attention", "moe"),
        ("heavily_compressed_attention", "moe"), ("compressed_sparse_attention", "moe"),
    ]  # fmt: skip
    assert facts.router_families == ["hash", "score_topk", "score_topk", "score_topk"]


def test_logits_with_generation_equal_the_model(tiny_deepseek_v4, traced):
    record = traced.records[0]
    full = tiny_deepseek_v4.original_model(record.ids[None]).logits[0, len(IDS) - 1 :]
    error = (record.query_logits - full.float()).abs().max().item()
    print(f"\nDeepSeek-V4: max |logit - HF logit| over prompt end + 3 steps {error:.1e}")
    assert error <= 1e-4


def test_streams_rebuilt_from_post_comb_and_block_outputs(tiny_deepseek_v4, traced):
    t = traced.records[0].tensors
    assert t["resid"].shape == (5, len(IDS) + 3, 4, 32)
    error = streams.rebuild_error(t)
    print(f"\nDeepSeek-V4: stream rebuild max relative error {error:.1e}")
    assert error <= 1e-5
    # pre (recomputed from the module's weights) collapses the streams into what each
    # sub-block read: the bridge's hook on the hyper-connection's collapsed output.
    names = [f"blocks.{layer}.{s}_hc.hook_out" for layer in range(4) for s in ("attn", "mlp")]
    traced_again = interp.trace(tiny_deepseek_v4, IDS, capture=["residual", *names])
    t2 = traced_again.records[0].tensors
    for i, name in enumerate(names):
        layer, sub = divmod(i, 2)
        before = t2["resid"][layer] if sub == 0 else t2["resid_mid"][layer]
        collapsed = (t2["hc_pre"][layer, sub, ..., None] * before).sum(-2)
        assert torch.allclose(collapsed, t2[name], rtol=1e-5, atol=1e-6), name


def test_every_comb_is_doubly_stochastic(traced):
    comb = traced.records[0].tensors["hc_comb"]
    error = streams.stochastic_error(comb)
    print(f"\nDeepSeek-V4: max |row or column sum of comb - 1| {error:.1e}")
    assert error <= 1e-4
    hc = traced.hc
    assert set(hc.weight) == {"pre", "post", "comb"} and set(hc.block) == {"attn", "mlp"}
    assert len(hc.query("weight == 'comb'")) == 4 * 2 * (len(IDS) + 3) * 16


def test_composite_mixing_gain_stays_one(traced):
    gain = mixing_gain(traced.hc)
    assert len(gain) == (len(IDS) + 3) * 8
    # The product of doubly stochastic matrices is doubly stochastic: gain 1 at every depth.
    print(f"\nDeepSeek-V4: composite gain range {gain.gain.min():.6f}..{gain.gain.max():.6f}")
    assert (gain.gain - 1).abs().max() <= 1e-3


def test_residual_frame_has_a_stream_column(traced):
    frame = traced.residual
    assert "stream" in frame.columns and set(frame.stream) == {0, 1, 2, 3}
    t = traced.records[0].tensors
    row = frame.query("layer == 1 and stage == 'resid_mid' and pos == 2 and stream == 3")
    assert row.norm.item() == pytest.approx(t["resid_mid"][1, 2, 3].norm().item(), rel=1e-6)
    write = frame.query("layer == 2 and stage == 'attn_out' and pos == 4 and stream == 1")
    expected = (t["hc_post"][2, 0, 4, 1] * t["attn_out"][2, 4]).norm().item()
    assert write.norm.item() == pytest.approx(expected, rel=1e-6)


def test_routing_equals_v4s_own_routers_and_rebuilds_each_block(tiny_deepseek_v4):
    seen, handles = {}, []
    table = routers(tiny_deepseek_v4)
    for layer, router in table.items():

        def keep_gate(m, args, out, layer=layer):
            seen[("gate", layer)] = out

        def keep_block(m, args, out, layer=layer):
            seen[("block", layer)] = (args[0].detach(), out.detach())

        handles += [
            router.module.register_forward_hook(keep_gate),
            router.block.register_forward_hook(keep_block),
        ]
    trace = interp.trace(tiny_deepseek_v4, IDS, capture=["routing"])
    for h in handles:
        h.remove()
    assert set(trace.routing.router) == {"hash", "score_topk"}
    for i, (layer, router) in enumerate(table.items()):
        _, weights, experts = seen[("gate", layer)]  # transformers' router: its own choice
        mine = trace.tensor("router_experts", 0)[i]
        order, mine_order = experts.sort(-1), mine.sort(-1)
        assert torch.equal(mine_order.values, order.values), layer
        error = (
            (
                trace.tensor("router_weights", 0)[i].gather(-1, mine_order.indices)
                - weights.gather(-1, order.indices)
            )
            .abs()
            .max()
            .item()
        )
        assert error <= 1e-6, (layer, error)
        if router.family == "hash":  # the experts are the table's, whatever the gate says
            table_experts = router.block.gate.tid2eid[IDS].sort(-1).values
            assert torch.equal(mine_order.values, table_experts)
        x, out = seen[("block", layer)]
        x = x[0]
        rebuilt = sum(y for y in _shared_outputs(router, x))
        for t in range(len(x)):
            for e, w in zip(mine[t].tolist(), trace.tensor("router_weights", 0)[i][t]):
                rebuilt[t] += _expert_output(router, e, x[t : t + 1], w[None])[0]
        relative = ((rebuilt - out[0]).norm() / out[0].norm()).item()
        print(f"\nDeepSeek-V4 layer {layer} ({router.family}): block rebuild {relative:.1e}")
        assert relative <= 1e-5


@pytest.mark.parametrize("prompt_length", [1, 3, 10])
def test_memory_formula_equals_the_cache_at_every_step(tiny_deepseek_v4, prompt_length):
    trace = interp.trace(tiny_deepseek_v4, IDS[:prompt_length], max_new_tokens=6)
    memory = trace.memory
    assert (memory.bytes == memory.measured_bytes).all()
    kinds = memory.groupby("layer").kind.unique().map(list).to_dict()
    assert kinds[0] == ["sliding_kv"]
    assert kinds[1] == ["sliding_shared_kv", "compressed_kv", "indexer", "compressor_state"]
    assert kinds[2] == ["sliding_shared_kv", "compressed_kv", "compressor_state"]
    # Compressed layers gain one entry per compress_rate tokens; sliding ones stop at the window.
    for layer, rate in [(1, 2), (2, 4)]:
        rows = memory.query(f"layer == {layer} and kind == 'compressed_kv'")
        n = prompt_length + rows.step
        assert (rows.entries == n // rate).all()
    sliding = memory.query("kind == 'sliding_kv'")
    assert (sliding.entries == (prompt_length + sliding.step).clip(upper=3)).all()


def test_readout_of_the_last_streams_is_the_models_logits(tiny_deepseek_v4, traced):
    record = traced.records[0]
    full = tiny_deepseek_v4.original_model(record.ids[None]).logits[0]
    error = (traced.readout(record.tensors["resid"][-1]) - full).abs().max().item()
    assert error <= 1e-4


def test_attention_maps_compressed_entries_onto_their_spans(tiny_deepseek_v4):
    # transformers' own weights of layer 2 (heavily compressed, rate 4) for a 10-token prompt.
    seen = {}
    module = tiny_deepseek_v4.blocks[2].attn.original_component

    def keep(module, args, out) -> None:
        seen.setdefault("w", out[1])

    handle = module.register_forward_hook(keep)
    trace = interp.trace(tiny_deepseek_v4, IDS, query_positions="all")
    handle.remove()
    weights = seen["w"][0]  # [H, T, T sliding + 2 compressed]
    pattern = trace.records[0].tensors["patterns"][2]  # [H, T, T] over token positions
    assert weights.shape[-1] == len(IDS) + len(IDS) // 4
    # Each row keeps its mass (what the sink leaves); entry 1 (tokens 4..7) is shared evenly.
    assert torch.allclose(pattern.sum(-1), weights.sum(-1), atol=1e-6)
    expected = weights[..., : len(IDS)].clone()
    for entry in range(2):
        expected[..., entry * 4 : entry * 4 + 4] += weights[..., len(IDS) + entry, None] / 4
    assert torch.allclose(pattern, expected, atol=1e-6)


def test_attention_frame_says_which_source_each_weight_came_from(tiny_deepseek_v4):
    # transformers' own weights of every layer on the prompt, then 3 generated tokens.
    seen = {}

    def keeper(layer):
        def keep(module, args, out) -> None:  # returns None: the output stays the module's
            seen.setdefault(layer, out[1][0])

        return keep

    handles = [
        block.attn.original_component.register_forward_hook(keeper(layer))
        for layer, block in enumerate(tiny_deepseek_v4.blocks)
    ]
    trace = interp.trace(tiny_deepseek_v4, IDS, max_new_tokens=3, query_positions="all")
    for handle in handles:
        handle.remove()
    frame = trace.attention
    assert list(frame.columns) == ["prompt", "layer", "head", "kv_head", "query", "key",
                                   "source", "weight"]  # fmt: skip
    # Compressed rows only on the compressed layers (1 CSA rate 2, 2 HCA rate 4, 3 CSA).
    assert sorted(frame.query("source == 'compressed'").layer.unique()) == [1, 2, 3]
    # The sources add up to the token pattern, generated rows included.
    keys = ["layer", "head", "query", "key"]
    total = frame.groupby(keys).weight.sum()
    pattern = trace.records[0].tensors["patterns"]
    index = tuple(torch.as_tensor(total.index.get_level_values(k).to_numpy()) for k in keys)
    assert torch.allclose(torch.tensor(total.to_numpy().copy()), pattern[index], atol=1e-6)
    n = len(IDS)
    for layer, rate in ((1, 2), (2, 4), (3, 2)):  # prompt rows against the module's weights
        weights = seen[layer]  # [H, T, T sliding + T // rate compressed]
        own = frame[(frame.layer == layer) & (frame["query"] < n)]
        share = own[own.source == "compressed"].set_index(["head", "query", "key"]).weight
        sliding = own[own.source == "sliding"].set_index(["head", "query", "key"]).weight
        for h, q, k in [(0, 9, 1), (1, 7, 3), (3, 9, 8), (2, 4, 0)]:
            entry = k // rate
            expected = weights[h, q, n + entry] / rate if entry < n // rate else 0.0
            assert share[(h, q, k)] == pytest.approx(float(expected), abs=1e-7)
            assert sliding[(h, q, k)] == pytest.approx(float(weights[h, q, k]), abs=1e-6)
    # A sliding layer's weights are all from its window.
    assert (frame.query("layer == 0").source == "sliding").all()


def test_saved_trace_keeps_sources_and_shared_experts(tiny_deepseek_v4, tmp_path):
    # Shared experts are numbered from n_experts in the routing frame: a saved run holding
    # them loads (it was refused as out of bounds).
    trace = interp.trace(tiny_deepseek_v4, IDS, max_new_tokens=2, query_positions="all")
    assert trace.routing.query("shared").expert.min() == trace.facts.n_experts
    trace.save(tmp_path / "run")
    loaded = interp.Trace.load(tmp_path / "run")
    for name in ("attention", "routing"):
        pd.testing.assert_frame_equal(getattr(loaded, name), getattr(trace, name))


def test_journey_shows_each_stream_and_the_mixing_gain(tiny_deepseek_v4):
    from interp.analysis.journey import format_journey, journey

    trace = interp.trace(tiny_deepseek_v4, "the cat sat on the mat", max_new_tokens=2)
    frame = journey(trace)
    layers = frame[frame.stage == "layer"]
    assert len(layers) == 4 and (layers.streams.str.split().map(len) == 4).all()
    assert ((layers.mix_gain - 1).abs() <= 1e-3).all()
    assert "mixing gain" in format_journey(frame)
    assert set(ex_balance(trace).load_fixed_by) == {"token table", "router"}


def ex_balance(trace):
    from interp.analysis.experts import balance

    frame = balance(trace.routing)
    assert list(frame.query("layer == 0").load_fixed_by) == ["token table"]
    return frame


def test_deltas_follow_the_collapsed_stream_each_layer_reads(traced):
    from interp.analysis.deltas import deltas

    t = traced.records[0].tensors
    frame = deltas(traced)
    # Layer 2's read at position 5 is pre . streams, by hand.
    by_hand = (t["hc_pre"][2, 0, 5, :, None] * t["resid"][2, 5]).sum(0).norm().item()
    row = frame.query("layer == 2 and pos == 5")
    assert row.resid_norm.item() == pytest.approx(by_hand, rel=1e-5)
    assert row.attn_norm.item() == pytest.approx(t["attn_out"][2, 5].norm().item(), rel=1e-5)


def test_cli_journey_and_experts_run_on_v4(tiny_deepseek_v4, capsys):
    from interp import cli

    path = tiny_deepseek_v4.original_model.config._name_or_path
    assert cli.main(["journey", "the cat sat on the mat", "--model", path, "--generate", "1"]) == 0
    assert "mixing gain" in capsys.readouterr().out
    assert cli.main(["experts", "the cat sat on the mat", "--model", path]) == 0
    assert "token table" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["attention", "lens", "routing", "journey"])
def test_show_draws_each_view(traced, kind):
    html = traced.show(kind).html
    assert "<script" in html and len(html) > 10_000
