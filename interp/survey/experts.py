"""Expert statistics of a survey: routing counts reduced at the router, batch by batch.

Each MoE layer's router is read as its family decides (`interp.trace.routers`: softmax top-k,
top-k softmax, DeepSeek-V3's sigmoid with bias and groups, Llama 4's sigmoid top-1), from a
forward hook on the Hugging Face router module, as the trace reads it. The selection is the
family's own top-k (with its bias and group limit), never a re-sort of the logits; the router
probability per expert is the family's distribution (softmax p, or s / sum(s) for sigmoid
routers), float32. Shared experts are always on and stay out of every count here. Padding
rows are dropped before anything is counted.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from interp.analysis.experts import balance_metrics, js_divergence
from interp.survey.accumulators import Accumulators, histogram
from interp.survey.batch import Batch
from interp.survey.top_tokens import TopTokens, top_tokens_frame
from interp.trace.routers import Decision, capture_hook, routers
from interp.vocab import prob_entropy

ENTROPY_BINS = 32


class ExpertStats:
    def __init__(self, model, acc: Accumulators, domains: list[str], facts: dict):
        self.model, self.layers = model, facts["moe_layers"]
        L, E, V, D = len(self.layers), facts["n_experts"], facts["d_vocab"], len(domains)
        self.n_experts, self.top_k = E, facts["top_k"]
        self.edges = torch.linspace(0, math.log(E), ENTROPY_BINS + 1)
        self.count = acc.counts("expert_count", L, E)
        self.prob = acc.sums("expert_prob", L, E)
        self.entropy_hist = acc.counts("routing_entropy_hist", L, ENTROPY_BINS)
        self.entropy_sum = acc.sums("routing_entropy_sum", L)
        self.coact = acc.counts("coactivation", L, E, E)
        self.transitions = acc.counts("transitions", max(L - 1, 0), E, E)
        self.reuse = acc.counts("locality_shared", L)  # experts a token shares with the next
        self.pairs = acc.counts("locality_pairs")
        self.domain = acc.counts("domain_count", D, 2, L, E)
        # Top tokens per expert: bounded summaries, not a [layer, expert, vocab] table.
        self.top_tokens = TopTokens(acc, L, E, V)
        self.seen = acc.counts("token_seen", V)
        self.vio_sum = acc.sums("max_vio_batch_sum", L)
        self.vio_sq = acc.sums("max_vio_batch_sq", L)
        self.batches = acc.counts("batches")
        self.batch: Batch | None = None
        self.selected: dict[int, tuple] = {}  # this batch's ([tokens, k] experts, [E] load)

    def hooks(self) -> list[tuple[str, object]]:
        return []  # the routers are read from their Hugging Face modules (`module_hooks`)

    def module_hooks(self) -> list[tuple[torch.nn.Module, object]]:
        # Found here, not in __init__, so recorded routing can be counted with no model.
        found = routers(self.model)
        return [(found[layer].module, capture_hook(found[layer], self._store(i)))
                for i, layer in enumerate(self.layers)]  # fmt: skip

    def start(self, batch: Batch) -> None:
        self.batch, self.selected = batch, {}
        self.rows = batch.valid.flatten()
        self.ids = batch.ids.flatten()[self.rows]
        # Per routed token: the (domain, half) cell it counts in.
        cell = (batch.domain * 2 + batch.half)[:, None].expand_as(batch.ids).flatten()
        self.cell = cell[self.rows]
        # Locality: each position's slot in a flat [position, expert] mark table, and the
        # positions whose next one is a real token of the same window.
        self.slot = torch.arange(batch.ids.numel(), device=batch.ids.device)[:, None]
        self.slot = self.slot * self.n_experts
        followed = torch.zeros_like(batch.valid)
        followed[:, :-1] = batch.pairs
        self.followed = followed.flatten().nonzero().squeeze(1)
        self.seen += torch.bincount(self.ids, minlength=len(self.seen))

    def _store(self, i: int):
        def store(x: torch.Tensor, decision: Decision) -> None:
            prob = decision.dist[self.rows]  # [tokens, E]
            self.prob[i] += prob.sum(0)
            entropy = prob_entropy(prob)
            self.entropy_sum[i] += entropy.sum()
            self.entropy_hist[i] += histogram(entropy, self.edges)
            self._count(i, decision.experts)

        return store

    def _count(self, i: int, chosen: torch.Tensor) -> None:
        # Index counts (bincount of flat ids and pair ids), not one-hot products: a token adds
        # k ids and its pairs instead of a one-hot [tokens, E] and its E x E products. A
        # fresh bincount added to the [E, E] counts beats adding in place (index_add_):
        # its scattered writes stay in cache.
        E = self.n_experts
        chosen = chosen.long()
        real = chosen[self.rows]  # [tokens, k], distinct experts per token
        load = torch.bincount(real.flatten(), minlength=E)
        self.selected[i] = (real, load)
        self.count[i] += load
        # Each unordered pair of the k chosen once (j < l): the table adds the transpose
        # and the diagonal (the expert's own count), `symmetric_coactivation`.
        k = real.shape[1]
        _add_pairs(self.coact[i], torch.cat([real[:, :-d] for d in range(1, k)], 1),
                   torch.cat([real[:, d:] for d in range(1, k)], 1))  # fmt: skip
        if i > 0 and self.layers[i - 1] == self.layers[i] - 1:
            _add_pairs(self.transitions[i - 1], self.selected[i - 1][0][:, :, None], real[:, None])
        # Experts a token shares with the next: mark every (position, expert) chosen, then
        # look up (position + 1, expert) for each expert of a followed position.
        mark = torch.zeros(len(self.slot) * E, dtype=torch.bool, device=chosen.device)
        mark[(self.slot + chosen).flatten()] = True
        after = (self.slot[self.followed] + E + chosen[self.followed]).flatten()
        self.reuse[i] += mark[after].sum()
        cells = torch.bincount((self.cell[:, None] * E + real).flatten(),
                               minlength=self.domain.shape[0] * 2 * E)  # fmt: skip
        self.domain[:, :, i] += cells.view(-1, 2, E)
        self.top_tokens.add(i, real, self.ids)

    def count_recorded(self, batch: Batch, chosen: torch.Tensor) -> None:
        """One batch of recorded routing, no model: chosen [batch * pos, MoE layers, k]."""
        self.start(batch)
        for i in range(chosen.shape[1]):
            self._count(i, chosen[:, i])
        self.finish(batch, None)

    def finish(self, batch: Batch, logits: torch.Tensor) -> None:
        self.pairs += batch.pairs.sum()
        self.batches += 1
        # MaxVio of this batch: under torchrun a batch holds consecutive windows of one rank's
        # own records, so the mean over batches differs from one process's (the totals don't).
        for i, (_, f) in self.selected.items():
            vio = self.n_experts * f.max() / f.sum() - 1.0
            self.vio_sum[i] += vio
            self.vio_sq[i] += vio**2
        self.selected = {}

    def tables(self, acc: dict[str, torch.Tensor], domains: list[str], tokenizer) -> dict:
        return expert_tables(acc, self.layers, self.top_k, domains, tokenizer, self.edges)


def _add_pairs(target: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """target[n, n] += counts of the pairs (a, b), a and b broadcast together."""
    n = target.shape[1]
    target += torch.bincount((a * n + b).flatten(), minlength=n * n).view(n, n)


def symmetric_coactivation(pairs: np.ndarray, count: np.ndarray) -> np.ndarray:
    """[L, E, E] tokens routed to both experts, from the unordered pairs counted once
    (`coactivation`) and the experts' own counts (the diagonal)."""
    full = pairs + pairs.transpose(0, 2, 1)
    idx = np.arange(count.shape[1])
    full[:, idx, idx] += count
    return full


def expert_tables(acc, layers, top_k, domains, tokenizer, edges) -> dict[str, pd.DataFrame]:
    count, prob_sum = acc["expert_count"].numpy(), acc["expert_prob"].numpy()
    routed = count.sum(1) // top_k  # tokens per layer
    prob = prob_sum / np.maximum(routed, 1)[:, None]
    n_batches = max(int(acc["batches"]), 1)
    layer_rows, expert_rows = [], []
    for i, layer in enumerate(layers):
        vio_mean = float(acc["max_vio_batch_sum"][i]) / n_batches
        vio_var = float(acc["max_vio_batch_sq"][i]) / n_batches - vio_mean**2
        layer_rows.append({
            "layer": layer, **balance_metrics(count[i], prob[i], top_k),
            "routing_entropy": float(acc["routing_entropy_sum"][i]) / max(int(routed[i]), 1),
            "max_vio_batch": vio_mean, "max_vio_batch_std": math.sqrt(max(vio_var, 0.0)),
            "locality": float(acc["locality_shared"][i]) / max(int(acc["locality_pairs"]), 1)
            / top_k, "locality_chance": top_k / count.shape[1],
        })  # fmt: skip
        for e in range(count.shape[1]):
            load = count[i, e] / max(count[i].sum(), 1)
            expert_rows.append({"layer": layer, "expert": e, "count": int(count[i, e]),
                                "load": load, "prob": prob[i, e]})  # fmt: skip
    tables = {"expert_layers": pd.DataFrame(layer_rows), "experts": pd.DataFrame(expert_rows)}
    tables["routing_entropy"] = _hist_frame(acc["routing_entropy_hist"], layers, edges)
    coact = symmetric_coactivation(acc["coactivation"].numpy(), count)
    tables["coactivation"] = _coactivation(coact, layers, routed)
    tables["transitions"] = _transitions(acc["transitions"].numpy(), layers)
    tables["domain_load"], tables["domain_divergence"] = _domains(
        acc["domain_count"].numpy(), layers, domains
    )
    tables["expert_tokens"] = top_tokens_frame(acc, layers, tokenizer)
    return tables


def _hist_frame(hist: torch.Tensor, layers, edges) -> pd.DataFrame:
    rows = [{"layer": layer, "low": float(edges[b]), "high": float(edges[b + 1]),
             "count": int(hist[i, b])}
            for i, layer in enumerate(layers) for b in range(hist.shape[1])]  # fmt: skip
    return pd.DataFrame(rows)


def _coactivation(coact: np.ndarray, layers, routed) -> pd.DataFrame:
    """rate = share of tokens routed to both; expected = product of the selection rates."""
    frames = []
    for i, layer in enumerate(layers):
        rate = coact[i] / max(int(routed[i]), 1)
        sel = np.diag(rate)
        e, o = np.meshgrid(np.arange(len(sel)), np.arange(len(sel)), indexing="ij")
        frames.append(pd.DataFrame({"layer": layer, "expert": e.ravel(), "partner": o.ravel(),
                                    "count": coact[i].ravel(), "rate": rate.ravel(),
                                    "expected": np.outer(sel, sel).ravel()}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _transitions(trans: np.ndarray, layers) -> pd.DataFrame:
    """P(expert at layer + 1 | expert at layer); each token adds its k x k pairs."""
    frames = []
    for i in range(trans.shape[0]):
        e, o = np.meshgrid(np.arange(trans.shape[1]), np.arange(trans.shape[2]), indexing="ij")
        rows = trans[i].sum(1, keepdims=True)
        prob = trans[i] / np.maximum(rows, 1)
        frames.append(pd.DataFrame({"layer": layers[i], "expert": e.ravel(),
                                    "next_expert": o.ravel(), "count": trans[i].ravel(),
                                    "prob": prob.ravel()}))  # fmt: skip
    columns = ["layer", "expert", "next_expert", "count", "prob"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _domains(cells: np.ndarray, layers, domains) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load per domain; JS (bits) between each pair of domains, beside the split-half noise:
    the JS between the two random halves of each domain's windows (the larger of the two)."""
    per_domain = cells.sum(1)  # [domain, layer, expert]
    loads = []
    for d, name in enumerate(domains):
        for i, layer in enumerate(layers):
            total = max(per_domain[d, i].sum(), 1)
            loads += [{"layer": layer, "domain": name, "expert": e, "count": int(c),
                       "load": c / total} for e, c in enumerate(per_domain[d, i])]  # fmt: skip

    def noise(d: int, i: int) -> float:
        a, b = cells[d, 0, i], cells[d, 1, i]
        return js_divergence(a, b) if a.sum() and b.sum() else float("nan")

    pairs = []
    for i, layer in enumerate(layers):
        for a in range(len(domains)):
            for b in range(a + 1, len(domains)):
                if not (per_domain[a, i].sum() and per_domain[b, i].sum()):
                    continue
                js = js_divergence(per_domain[a, i], per_domain[b, i])
                pairs.append({"layer": layer, "domain": domains[a], "other": domains[b],
                              "js": js, "noise": max(noise(a, i), noise(b, i))})  # fmt: skip
    columns = ["layer", "domain", "other", "js", "noise"]
    return pd.DataFrame(loads), pd.DataFrame(pairs, columns=columns)
