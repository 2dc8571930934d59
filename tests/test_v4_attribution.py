"""DeepSeek-V4's several residual streams (mHC) in direct logit attribution and the lens: the
components sum to transformers' own logit, one component equals a hand ablation through
transformers' modules, and the lens reads each stream and the model's collapse."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analysis.attribution import direct_logit_attribution, final_norm
from interp.analysis.lens import logit_lens, stream_lens

IDS = torch.tensor([3, 17, 42, 8, 99, 23, 5, 61, 9, 11])


@pytest.fixture(scope="module")
def traced(tiny_deepseek_v4):
    return interp.trace(tiny_deepseek_v4, IDS, max_new_tokens=3)


@pytest.fixture(scope="module")
def zoo():
    return interp.load("tiny-deepseek-v4")


def _sum_gap(model, trace, **kwargs) -> float:
    """Relative gap between the components' sum and transformers' own logit (difference)."""
    frame = direct_logit_attribution(trace, final_norm(model), **kwargs)
    record = trace.records[0]
    logits = model.original_model(record.ids[None]).logits[0, frame.pos[0]].double()
    real = logits[frame.target_id[0]]
    if kwargs.get("other") is not None:
        real = real - logits[kwargs["other"]]
    return abs(frame.logit.sum() - real.item()) / abs(real.item())


@pytest.mark.parametrize("pos", [None, 4, 12])
def test_components_sum_to_transformers_logit(tiny_deepseek_v4, traced, pos):
    gap = _sum_gap(tiny_deepseek_v4, traced, pos=pos)
    print(f"\nDeepSeek-V4 DLA at pos {pos}: |sum - logit| / |logit| {gap:.1e}")
    assert gap <= 1e-5
    assert _sum_gap(tiny_deepseek_v4, traced, pos=pos, target=5, other=7) <= 1e-5


def test_components_sum_to_the_zoo_models_logit(zoo):
    trace = interp.trace(zoo, "the cat sat on the mat because", max_new_tokens=2)
    frame = direct_logit_attribution(trace, final_norm(zoo))
    assert set(frame.kind) == {"embed", "head", "mlp", "bias"}
    assert len(frame) == 1 + zoo.cfg.n_layers * (zoo.cfg.n_heads + 1) + 1
    for pos in (None, trace.records[0].n_prompt):
        gap = _sum_gap(zoo, trace, pos=pos)
        print(f"\ntiny-deepseek-v4 DLA at pos {pos}: |sum - logit| / |logit| {gap:.1e}")
        assert gap <= 1e-5


def _hand_ablation(model, ids, pos: int, target: int, layer: int, head: int | None) -> float:
    """logit[target] minus the logit with one write removed (a head of `layer`'s attention,
    or its MoE when head is None), everything else frozen at the clean run, by transformers'
    own modules: every later sub-block's output, every hyper-connection's pre / post / comb and
    the head's collapse weights (their input_norm fed the clean value, from which they compute
    them), and the final RMSNorm's scale."""
    hf = model.original_model
    blocks = hf.model.layers
    clean, handles = {}, []

    def keep(name):
        def hook(module, args, out):
            clean[name] = (args[0].detach(), out)

        return hook

    named = {f"{i}.{part}": getattr(b, part) for i, b in enumerate(blocks)
             for part in ("self_attn", "mlp")}  # fmt: skip
    named.update({f"{i}.{hc}.norm": getattr(b, hc).input_norm for i, b in enumerate(blocks)
                  for hc in ("attn_hc", "ffn_hc")})  # fmt: skip
    named.update({"head.norm": hf.model.hc_head.input_norm, "norm": hf.model.norm})
    for name, module in named.items():
        handles.append(module.register_forward_hook(keep(name)))
    with torch.no_grad():
        logit = hf(ids[None]).logits[0, pos, target].double()
    for h in handles:
        h.remove()

    ablated_name = f"{layer}.{'mlp' if head is None else 'self_attn'}"
    order = [f"{i}.{part}" for i in range(len(blocks)) for part in ("self_attn", "mlp")]
    later = order[order.index(ablated_name) + 1 :]

    def frozen(name):
        return lambda module, args, out: clean[name][1]

    # The input norms fix the hyper-connections' weights and the head's collapse weights.
    handles = [named[n].register_forward_hook(frozen(n)) for n in named if n.endswith(".norm")]
    handles += [named[n].register_forward_hook(frozen(n)) for n in later]
    norm = hf.model.norm
    x = clean["norm"][0].float()
    scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    handles.append(norm.register_forward_hook(lambda m, args, out: m.weight * args[0] * scale))
    if head is None:
        handles.append(named[ablated_name].register_forward_hook(lambda m, a, out: out * 0))
    else:
        attn = blocks[layer].self_attn
        per_group = attn.num_heads // attn.config.o_groups

        def drop_head(module, args):
            grouped = args[0].clone()  # [B T groups heads_per_group*head_dim]
            g, j = divmod(head, per_group)
            grouped[..., g, j * attn.head_dim : (j + 1) * attn.head_dim] = 0
            return (grouped,)

        handles.append(attn.o_a_proj.register_forward_pre_hook(drop_head))
    try:
        with torch.no_grad():
            ablated = hf(ids[None]).logits[0, pos, target].double()
    finally:
        for h in handles:
            h.remove()
    return (logit - ablated).item()


@pytest.mark.parametrize(("layer", "head"), [(1, 2), (2, None), (3, 0)])
def test_a_component_equals_a_frozen_hand_ablation(tiny_deepseek_v4, traced, layer, head):
    frame = direct_logit_attribution(traced, final_norm(tiny_deepseek_v4), pos=7)
    row = frame.query(f"layer == {layer} and head == {-1 if head is None else head}")
    by_hand = _hand_ablation(tiny_deepseek_v4, IDS, 7, int(frame.target_id[0]), layer, head)
    gap = abs(row.logit.item() - by_hand)
    print(f"\nL{layer} {head}: DLA {row.logit.item():.6f}, hand ablation {by_hand:.6f} ({gap:.1e})")
    assert row.logit.item() == pytest.approx(by_hand, rel=1e-4, abs=1e-6)


def test_a_component_of_the_zoo_model_equals_a_frozen_hand_ablation(zoo):
    # Trained combs are far from uniform, so a mixing read the wrong way round shows here.
    trace = interp.trace(zoo, "the cat sat on the mat because")
    frame = direct_logit_attribution(trace, final_norm(zoo))
    pos, target = int(frame.pos[0]), int(frame.target_id[0])
    for layer, head in [(0, 1), (1, None)]:
        row = frame.query(f"layer == {layer} and head == {-1 if head is None else head}")
        by_hand = _hand_ablation(zoo, trace.records[0].ids, pos, target, layer, head)
        gap = abs(row.logit.item() - by_hand)
        print(f"\ntiny-deepseek-v4 L{layer} {head}: DLA {row.logit.item():.6f}, hand ({gap:.1e})")
        assert row.logit.item() == pytest.approx(by_hand, rel=1e-4, abs=1e-5)


def test_lens_reads_each_stream_and_the_collapse(tiny_deepseek_v4, traced):
    frame = stream_lens(traced)
    assert set(frame.stream) == {-1, 0, 1, 2, 3}
    record = traced.records[0]
    hf = tiny_deepseek_v4.original_model
    with torch.no_grad():
        full = hf(record.ids[None]).logits[0].double().log_softmax(-1)
    last = frame.query("stream == -1 and layer == 3").sort_values("pos")
    positions = torch.arange(len(record.ids))
    model_logp = full[positions, torch.tensor(last.target_id.to_numpy())]
    assert torch.allclose(torch.tensor(last.logprob.to_numpy()), model_logp, atol=1e-5)
    assert (last["rank"] == 0).all() and (last.kl.abs() <= 1e-6).all()
    # One stream alone: transformers' final norm and lm_head on that stream, no collapse.
    x = record.tensors["resid"][2, 4, 2]
    with torch.no_grad():
        by_hand = hf.lm_head(hf.model.norm(x[None])).double().log_softmax(-1)[0]
    row = frame.query("stream == 2 and layer == 1 and pos == 4")
    assert row.logprob.item() == pytest.approx(by_hand[row.target_id.item()].item(), abs=1e-5)


def test_stream_arguments_are_checked(traced):
    with pytest.raises(interp.InterpError, match="outside the model's streams"):
        logit_lens(traced, stream=4)


def test_contribution_parts_sum_to_what_the_next_sub_block_reads(tiny_deepseek_v4):
    from interp.analysis.contributions import collapsed_parts, stream_contributions
    from interp.report.derived import derive
    from interp.report.inputs import ReportInputs
    from interp.report.patching import contributions_section

    # What the model's own modules collapse the streams to: each hyper-connection's output
    # (what its sub-block reads), and the head's.
    names = [f"blocks.{layer}.{s}_hc.hook_out" for layer in range(4) for s in ("attn", "mlp")]
    names = [*names[1:], "hc_head.hook_out"]
    trace = interp.trace(tiny_deepseek_v4, IDS, capture=["residual", *names])
    t = trace.records[0].tensors
    W_O = trace.weights["W_O"]
    # The heads' writes through V4's grouped output projection are attention's output.
    heads = torch.einsum("lphe,lhed->lpd", t["z"], W_O)
    torch.testing.assert_close(heads, t["attn_out"], rtol=1e-5, atol=1e-6)
    for pos in (3, 9):
        for (layer, sub), parts in collapsed_parts(t, W_O, pos).items():
            read = t[names[2 * layer + sub]][pos]
            torch.testing.assert_close(parts.sum(0), read, rtol=1e-5, atol=1e-6)
    frame = stream_contributions(t, W_O, pos=9)
    assert len(frame) == 4 * (1 + 4 + 2)
    assert frame.groupby(["layer", "stage"]).share.sum().to_numpy() == pytest.approx(1, abs=1e-5)
    derived = derive(trace, model_level=False)
    report = derived["contributions"]
    assert set(report.stage) == {"attn", "mlp"} and len(report) == len(frame)
    part = contributions_section(ReportInputs([trace], [derived]))
    assert len(part.images) == 1 and "collapsed stream the next sub-block reads" in part.notes[0]


def test_reach_by_stream_is_the_forward_mixing_read_by_the_head(traced):
    from interp.analysis.streams import reach

    t = traced.records[0].tensors
    # The head's weights, recomputed from its own parameters, collapse the last streams into
    # what the model's hc_head returned (its hooked output).
    collapsed = (t["hc_head"][..., None] * t["resid"][-1]).sum(-2)
    torch.testing.assert_close(collapsed, t["resid_read"][-1], rtol=1e-5, atol=1e-6)
    pos = 6
    embed, writes = reach(t, pos)
    post, comb = t["hc_post"][:, :, pos].double(), t["hc_comb"][:, :, pos].double()
    head = t["hc_head"][pos].double()
    order = [(layer, sub) for layer in range(4) for sub in (0, 1)]
    # Forwards, as DeepseekV4DecoderLayer mixes: stream weights g -> comb^T g at each later
    # sub-block, then the head reads stream s with weight head[s].
    g = torch.ones(4, dtype=torch.float64)
    for i, (layer, sub) in enumerate(order):
        g = comb[layer, sub].T @ g
        mine = post[layer, sub]
        for later in order[i + 1 :]:
            mine = comb[later].T @ mine
        torch.testing.assert_close(writes[layer, sub], head * mine)
    torch.testing.assert_close(embed, head * g)
