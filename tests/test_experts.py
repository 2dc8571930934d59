"""Expert-utilisation metrics against their definitions, on hand-built routing frames."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from interp.analysis import experts as ex
from interp.errors import InterpError
from interp.plots import experts as plots
from interp.trace.frames import routing_rows

N, K = 4, 2


def uniform_frame(n_exp: int = 8, top_k: int = 2, layers: int = 2) -> pd.DataFrame:
    """Every router distribution uniform, and token t picks experts t..t+k-1 (mod N), so
    every expert carries exactly the same load."""
    rows = []
    for layer in range(layers):
        for pos in range(n_exp):
            chosen = {(pos + j) % n_exp for j in range(top_k)}
            for e in range(n_exp):
                rank = (e - pos) % n_exp
                rows.append(
                    dict(
                        prompt="p",
                        pos=pos,
                        token=f"t{pos}",
                        layer=layer,
                        expert=e,
                        prob=1 / n_exp,
                        selected=e in chosen,
                        rank=rank,
                        weight=1 / n_exp if e in chosen else 0.0,
                    )
                )
    return pd.DataFrame(rows)


def test_dead_expert_counts_against_utilisation():
    # k = 1, N = 4, and the six tokens only ever pick experts 0, 1, 2: expert 3 is dead.
    rows = [
        dict(
            prompt="p",
            pos=t,
            token="x",
            layer=0,
            expert=e,
            prob=0.25,
            selected=e == t % 3,
            rank=(e - t % 3) % 4,
            weight=0.25 * (e == t % 3),
        )
        for t in range(6)
        for e in range(4)
    ]
    bal = ex.balance(pd.DataFrame(rows)).iloc[0]
    assert bal["dead"] == 1
    assert bal["entropy"] == pytest.approx(math.log(3) / math.log(4))
    assert bal["max_vio"] == pytest.approx(4 / 3 - 1)
    assert bal["balance"] == pytest.approx(4 * 3 * (1 / 3) * 0.25)


@pytest.fixture
def logits() -> dict[str, torch.Tensor]:
    """Router logits [layers=3, T=6, N] for two prompts, seeded."""
    gen = torch.Generator().manual_seed(0)
    return {p: 2 * torch.randn(3, 6, N, generator=gen) for p in ("a", "b")}


@pytest.fixture
def frame(logits) -> pd.DataFrame:
    parts = [
        routing_rows(lg, K, [f"w{i % 3}" for i in range(6)], prompt=p) for p, lg in logits.items()
    ]
    return pd.concat(parts, ignore_index=True)


def top_sets(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """prompt -> bool [layers, T, N] of the top-k selections, straight from the logits."""
    out = {}
    for p, lg in logits.items():
        idx = lg.topk(K, dim=-1).indices
        out[p] = torch.zeros_like(lg, dtype=torch.bool).scatter_(-1, idx, True)
    return out


def test_uniform_routing_is_perfectly_balanced():
    bal = ex.balance(uniform_frame())
    assert np.allclose(bal["balance"], 1.0)
    assert np.allclose(bal["entropy"], 1.0)
    assert np.allclose(bal[["max_vio", "cv"]], 0.0)
    assert (bal["dead"] == 0).all()
    assert np.allclose(bal["routing_entropy"], math.log(8))
    overall = ex.balance_overall(uniform_frame())
    assert overall.loc[0, "balance"] == pytest.approx(1.0)


def test_routing_frame_columns(frame, logits):
    assert len(frame) == 2 * 3 * 6 * N
    probs = logits["a"].softmax(-1)
    row = frame[(frame.prompt == "a") & (frame.layer == 1) & (frame.pos == 2)].set_index("expert")
    assert np.allclose(row["prob"], probs[1, 2].numpy(), atol=1e-6)
    assert row["rank"].tolist() == probs[1, 2].argsort(descending=True).argsort().tolist()
    assert row["selected"].sum() == K
    # OLMoE: selected experts are weighted by their raw (unrenormalised) probability.
    assert np.allclose(row["weight"], np.where(row["selected"], row["prob"], 0))
    renorm = routing_rows(logits["a"], K, ["x"] * 6, renormalise_top_k=True)
    assert np.allclose(renorm.groupby(["layer", "pos"])["weight"].sum(), 1.0)


def test_balance_metrics_match_their_formulas(frame, logits):
    sel, bal = top_sets(logits), ex.balance(frame).set_index("layer")
    for layer in range(3):
        counts = sum(s[layer].sum(0).double() for s in sel.values()).numpy()
        probs = torch.cat([lg[layer].softmax(-1) for lg in logits.values()]).mean(0).numpy()
        f = counts / counts.sum()
        mean_load = 12 * K / N
        row = bal.loc[layer]
        assert row["tokens"] == 12
        assert row["balance"] == pytest.approx(N * (f * probs).sum(), rel=1e-5)
        nz = f[f > 0]
        assert row["entropy"] == pytest.approx(-(nz * np.log(nz)).sum() / math.log(N))
        assert row["max_vio"] == pytest.approx((counts.max() - mean_load) / mean_load)
        assert row["cv"] == pytest.approx(f.std() / f.mean())
        assert row["dead"] == (counts == 0).sum()
        p = torch.cat([lg[layer].softmax(-1) for lg in logits.values()])
        ent = -(p * p.log()).sum(-1).mean().item()
        assert row["routing_entropy"] == pytest.approx(ent, rel=1e-5)


def test_coactivation_and_temporal_locality(frame, logits):
    sel = top_sets(logits)
    co = ex.coactivation(frame).set_index(["layer", "expert", "partner"])
    loc = ex.temporal_locality(frame).set_index("layer")
    for layer in range(3):
        m = torch.cat([s[layer] for s in sel.values()]).double()
        for i in range(N):
            for j in range(N):
                both = (m[:, i] * m[:, j]).mean().item()
                assert co.loc[(layer, i, j), "rate"] == pytest.approx(both)
        overlaps = [
            (s[layer][t] & s[layer][t + 1]).sum().item() / K for s in sel.values() for t in range(5)
        ]
        assert loc.loc[layer, "overlap"] == pytest.approx(np.mean(overlaps))
        assert loc.loc[layer, "chance"] == pytest.approx(K / N)


def test_transitions_and_mutual_information(frame, logits):
    sel = top_sets(logits)
    trans = ex.layer_transitions(frame)
    mi = ex.transition_information(frame).set_index("layer")
    assert np.allclose(trans.groupby(["layer", "expert"])["prob"].sum(), 1.0)
    for layer in range(2):
        joint = np.zeros((N, N))
        for s in sel.values():
            for t in range(6):
                for a in torch.nonzero(s[layer, t]).flatten().tolist():
                    for b in torch.nonzero(s[layer + 1, t]).flatten().tolist():
                        joint[a, b] += 1
        pj = joint / joint.sum()
        pa, pb = pj.sum(1), pj.sum(0)
        expected = sum(
            pj[a, b] * math.log(pj[a, b] / (pa[a] * pb[b]))
            for a in range(N)
            for b in range(N)
            if pj[a, b] > 0
        )
        assert mi.loc[layer, "mutual_information"] == pytest.approx(expected)


def test_js_divergence_properties():
    p, q = np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.1, 0.4, 0.4])
    assert ex.js_divergence(p, q) == pytest.approx(ex.js_divergence(q, p))
    assert ex.js_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert ex.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)  # disjoint: one bit
    m = (p + q) / 2
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0)  # noqa: E731
    assert ex.js_divergence(p, q) == pytest.approx(0.5 * kl(p) + 0.5 * kl(q))


def test_domain_load_and_divergence(frame, logits):
    sel = top_sets(logits)
    loads = ex.domain_load(frame, {"a": "code", "b": "prose"})
    assert np.allclose(loads.groupby(["layer", "domain"])["load"].sum(), 1.0)
    div = ex.domain_divergence(frame, {"a": "code", "b": "prose"}).set_index("layer")
    for layer in range(3):
        p, q = (sel[x][layer].sum(0).double().numpy() for x in ("a", "b"))
        assert div.loc[layer, "js"] == pytest.approx(ex.js_divergence(p / p.sum(), q / q.sum()))
    twin = pd.concat([frame, frame[frame.prompt == "a"].assign(prompt="c")])
    same = ex.domain_divergence(twin, {"a": "x", "c": "y"})
    assert np.allclose(same["js"], 0.0)


def test_vocabulary_specialisation(frame):
    vocab = ex.vocabulary_specialisation(frame, top=2, min_count=1)
    # 12 tokens per layer, the three words equally often: each seen 4 times per layer.
    assert (vocab["seen"] == 4).all()
    assert np.allclose(vocab["share"], vocab["count"] / 4)
    assert vocab.groupby(["layer", "expert"]).size().max() <= 2


def test_intervention_effect():
    before = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    after = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])
    eff = ex.intervention_effect(before, after)
    assert eff["kl"].iloc[0] == pytest.approx(0.0, abs=1e-7)
    p, q = before[0, 1].softmax(-1), after[0, 1].softmax(-1)
    assert eff["kl"].iloc[1] == pytest.approx((p * (p / q).log()).sum().item(), rel=1e-5)
    assert eff["changed"].tolist() == [False, True]
    assert eff["top1_after"].tolist() == [0, 2]


def test_expert_hooks_reject_bad_mode():
    with pytest.raises(InterpError):
        ex.expert_hooks([0], 1, mode="boost")


def test_plots_return_figures(frame):
    figs = [
        plots.load_heatmap(ex.expert_load(frame)),
        plots.coactivation_heatmap(ex.coactivation(frame), layer=0),
        plots.domain_heatmap(ex.domain_load(frame, {"a": "code", "b": "prose"})),
    ]
    for fig in figs:
        assert isinstance(fig, Figure)
