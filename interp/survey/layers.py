"""Layer statistics of a survey: residual norms and write sizes as histograms, the logit
lens's decision depth as a histogram, and the loss per domain.

Decision depth of a token: the first stream (resid_pre of layer d, or the output, d = L)
from which the lens's top-1 (final norm + unembedding of the stream) stays the model's own
top-1 to the end. The lens costs an unembedding of every layer's stream, so it reads one
position in `LENS_EVERY`: those with (pos - window index) % LENS_EVERY == 0, which spreads
the sample evenly over positions (a fixed pos % LENS_EVERY == 0 would give the context-free
first token of every window a weight of seq_len / LENS_EVERY); the histogram counts them.
"""

from __future__ import annotations

import pandas as pd
import torch

from interp.analysis.lens import lasting_agreement
from interp.survey.accumulators import Accumulators, histogram, log_edges
from interp.survey.batch import Batch
from interp.vocab import logsumexp

NORM_BINS = 64
NORM_RANGE = (1e-3, 1e5)
LENS_EVERY = 64
WRITES = ("attn_out", "mlp_out")


class LayerStats:
    def __init__(self, model, acc: Accumulators, domains: list[str], facts: dict):
        self.model, self.n_layers = model, facts["n_layers"]
        L, D = self.n_layers, len(domains)
        self.edges = log_edges(*NORM_RANGE, NORM_BINS)
        self.resid_hist = acc.counts("resid_norm_hist", L + 1, NORM_BINS)
        self.resid_sum = acc.sums("resid_norm_sum", L + 1)
        self.write_hist = acc.counts("write_norm_hist", len(WRITES), L, NORM_BINS)
        self.write_sum = acc.sums("write_norm_sum", len(WRITES), L)
        self.depth = acc.counts("decision_depth", L + 1)
        self.loss_sum = acc.sums("loss_sum", D)
        self.loss_tokens = acc.counts("loss_tokens", D)
        self.tokens = acc.counts("tokens")
        self.lens: dict[int, torch.Tensor] = {}  # this batch's sampled streams

    def hooks(self) -> list[tuple[str, object]]:
        out = []
        for layer in range(self.n_layers):
            out.append((f"blocks.{layer}.hook_resid_pre", self._resid(layer)))
            for w, name in enumerate(WRITES):
                out.append((f"blocks.{layer}.hook_{name}", self._write(w, layer)))
        out.append((f"blocks.{self.n_layers - 1}.hook_resid_post", self._resid(self.n_layers)))
        return out

    def start(self, batch: Batch) -> None:
        self.batch, self.lens = batch, {}
        pos = torch.arange(batch.valid.shape[1], device=batch.valid.device)
        self.sampled = batch.valid & ((pos - batch.index[:, None]) % LENS_EVERY == 0)
        self.tokens += batch.valid.sum()

    def _norms(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach().float().norm(dim=-1)[self.batch.valid]

    def _resid(self, layer: int):
        def hook(x: torch.Tensor, hook) -> None:
            norms = self._norms(x)
            self.resid_hist[layer] += histogram(norms, self.edges)
            self.resid_sum[layer] += norms.sum()
            if layer < self.n_layers:  # the output's top-1 comes from the logits
                self.lens[layer] = x.detach()[self.sampled]

        return hook

    def _write(self, w: int, layer: int):
        def hook(x: torch.Tensor, hook) -> None:
            norms = self._norms(x)
            self.write_hist[w, layer] += histogram(norms, self.edges)
            self.write_sum[w, layer] += norms.sum()

        return hook

    def finish(self, batch: Batch, logits: torch.Tensor) -> None:
        final = logits[self.sampled].argmax(-1)
        # Every layer's sampled streams in one unembedding: the unembedding matrix is read
        # once per batch, not once per layer (on a large vocabulary, that read is the cost).
        streams = torch.stack([self.lens[d] for d in range(self.n_layers)])
        top = self.model.unembed(self.model.ln_final(streams)).argmax(-1)  # [layer, token]
        # The output stream (d = L) is the final top-1 itself, so depth lies in [0, L].
        depth = lasting_agreement(top, final)
        self.depth += torch.bincount(depth, minlength=self.n_layers + 1)
        # Next-token loss of every real token with a real successor, float32: logsumexp minus
        # the target's logit, which reads the logits once and writes no [pos, vocab] copy.
        target = logits[:, :-1].gather(-1, batch.ids[:, 1:, None])[..., 0].float()
        nll = (logsumexp(logits)[:, :-1] - target) * batch.pairs
        self.loss_sum.index_add_(0, batch.domain, nll.sum(1).double())
        self.loss_tokens.index_add_(0, batch.domain, batch.pairs.sum(1))
        self.lens = {}

    def tables(self, acc: dict[str, torch.Tensor], domains: list[str], tokenizer) -> dict:
        L, edges = self.n_layers, self.edges
        rows = []
        for layer in range(L + 1):
            stage = "resid_pre" if layer < L else "resid_post"
            rows += _hist_rows(stage, min(layer, L - 1), acc["resid_norm_hist"][layer], edges)
        for w, name in enumerate(WRITES):
            for layer in range(L):
                rows += _hist_rows(name, layer, acc["write_norm_hist"][w, layer], edges)
        tokens = max(int(acc["tokens"]), 1)
        means = [{"stage": "resid_pre" if layer < L else "resid_post", "layer": min(layer, L - 1),
                  "norm": float(acc["resid_norm_sum"][layer]) / tokens}
                 for layer in range(L + 1)]  # fmt: skip
        means += [{"stage": name, "layer": layer, "norm": float(acc["write_norm_sum"][w, layer])
                   / tokens} for w, name in enumerate(WRITES) for layer in range(L)]  # fmt: skip
        depth = pd.DataFrame({"depth": range(L + 1), "count": acc["decision_depth"].numpy()})
        n = acc["loss_tokens"].clamp_min(1)
        loss = pd.DataFrame({"domain": domains, "tokens": acc["loss_tokens"].numpy(),
                             "loss": (acc["loss_sum"] / n).numpy()})  # fmt: skip
        return {"norm_histograms": pd.DataFrame(rows), "norms": pd.DataFrame(means),
                "decision_depth": depth, "loss": loss}  # fmt: skip


def _hist_rows(stage: str, layer: int, counts: torch.Tensor, edges: torch.Tensor) -> list[dict]:
    return [{"stage": stage, "layer": layer, "low": float(edges[b]), "high": float(edges[b + 1]),
             "count": int(c)} for b, c in enumerate(counts.tolist())]  # fmt: skip
