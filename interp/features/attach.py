"""Dictionaries on a live model: checks against the model, and the trace's feature hooks.

`Attachment` gives `interp.trace` one hook per dictionary and hook point. At the input hook it
encodes; at the output hook (the same one, for an SAE) it decodes, keeps each token's top-k
features, its L0 and its reconstruction error, and, when splicing, hands the reconstruction
(plus the error term, if asked) to the layers downstream. It runs where the activation lives,
in float32, and moves only the top-k and the per-token numbers to the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from interp.errors import InterpError
from interp.features.dictionary import Dictionary
from interp.features.load import load

# Hook points whose last axis is the residual width, d_model (TL names and bridge aliases).
_RESIDUAL = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
             "hook_mlp_out", "mlp.hook_in", "mlp.hook_out", "attn.hook_in", "attn.hook_out",
             "ln1.hook_normalized", "ln2.hook_normalized", "ln1.hook_in", "ln2.hook_in",
             "hook_embed", "hook_in", "hook_out")  # fmt: skip
_NEURONS = ("mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear")  # d_mlp


def dictionaries(features) -> list[Dictionary]:
    """Dictionaries from what a user hands in: one or a list of Dictionary objects or paths."""
    if isinstance(features, Dictionary | str | Path):
        features = [features]
    out = []
    for item in features:
        if isinstance(item, Dictionary):
            out.append(item)
        elif isinstance(item, str | Path):
            out.append(load(item))
        else:
            raise InterpError(f"features must be dictionaries or paths, not {type(item).__name__}")
    return out


def width(model, hook: str) -> int | None:
    """The last-axis width of `hook` on `model` (heads flattened for hook_z), when known."""
    cfg = model.cfg
    if hook.endswith("hook_z"):
        return cfg.n_heads * cfg.d_head
    if hook.endswith(_NEURONS):
        return getattr(cfg, "d_mlp", None)
    if hook.endswith(_RESIDUAL):
        return cfg.d_model
    return None


def check(dictionary: Dictionary, model, hook_names) -> None:
    """One line naming both the dictionary and the model where they do not fit."""
    model_name = getattr(model, "interp_name", model.cfg.model_name)
    for hook, size, what in ((dictionary.hook_in, dictionary.d_in, "reads"),
                             (dictionary.hook_out, dictionary.d_out, "writes")):  # fmt: skip
        if hook not in hook_names:
            raise InterpError(
                f"dictionary {dictionary.name} {what} {hook}, which model {model_name} does not "
                f"have (it has {model.cfg.n_layers} layers)"
            )
        expected = width(model, hook)
        if expected is not None and expected != size:
            raise InterpError(
                f"dictionary {dictionary.name} {what} width {size} at {hook}, but model "
                f"{model_name} has width {expected} there"
            )


def flat(x: torch.Tensor) -> torch.Tensor:
    """A hooked activation as a dictionary reads it: hook_z's heads flattened, float32."""
    return (x.flatten(-2) if x.ndim == 4 else x).float()


def dictionary_hooks(d: Dictionary, at_output) -> list[tuple[str, object]]:
    """The hooks that call `at_output(d, x, target)` once per forward, with the dictionary
    (on the activation's device), its input x and the output hook's activation (both `flat`):
    an SAE's one hook, or a transcoder's input hook (which keeps x) and output hook. What
    `at_output` returns replaces the activation (None: unchanged)."""
    pending: dict = {}

    def read(x: torch.Tensor, hook) -> None:
        pending["x"] = flat(x)

    def write(target: torch.Tensor, hook) -> torch.Tensor | None:
        out = flat(target)
        if d.transcoder:
            if "x" not in pending:
                raise InterpError(
                    f"dictionary {d.name} reads {d.hook_in}, which this model runs after "
                    f"{d.hook_out}, where it writes"
                )
            x = pending.pop("x")
        else:
            x = out
        result = at_output(d.to(out.device), x, out)
        return None if result is None else result.reshape(target.shape).to(target.dtype)

    return ([(d.hook_in, read)] if d.transcoder else []) + [(d.hook_out, write)]


def attach(model, hook_names, features, splice, error_term, top_k) -> Attachment | None:
    """`interp.trace`'s features: an Attachment, or None when no dictionary is given."""
    if not features:
        if splice or error_term:
            raise InterpError("splice and error_term need features= (dictionaries to splice in)")
        return None
    return Attachment(model, hook_names, features, splice=splice, error_term=error_term,
                      top_k=top_k)  # fmt: skip


class Attachment:
    """The feature hooks of one trace, and the per-forward results they collect."""

    def __init__(self, model, hook_names, features, *, splice=False, error_term=False,
                 top_k: int | None = 10):  # fmt: skip
        self.dicts = dictionaries(features)
        if not self.dicts:
            raise InterpError("features= is empty")
        for d in self.dicts:
            check(d, model, hook_names)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):  # fmt: skip
            raise InterpError(f"feature_top_k must be a positive integer or None, not {top_k!r}")
        self.splice, self.error_term, self.top_k = bool(splice), bool(error_term), top_k
        self.chunks: list[list[dict]] = [[] for _ in self.dicts]
        self.hooks = [pair for i, d in enumerate(self.dicts)
                      for pair in dictionary_hooks(d, self._at_output(i))]  # fmt: skip

    def _at_output(self, i: int):
        def keep(d: Dictionary, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
            acts, recon = d.forward(x)
            self.chunks[i].append(self._summary(acts, target - recon, target))
            if not self.splice:
                return None
            return target if self.error_term else recon  # recon + (target - recon) = target

        return keep

    def _summary(self, acts, error, target) -> dict:
        nonzero = (acts != 0).sum(-1)
        k = min(acts.shape[-1], self.top_k or max(1, int(nonzero.max())))
        top = acts.topk(k, dim=-1)
        return {
            "values": top.values.cpu(), "indices": top.indices.cpu(), "l0": nonzero.cpu(),
            "error": error.norm(dim=-1).cpu(), "norm": target.norm(dim=-1).cpu(),
        }  # fmt: skip

    def fill(self, records, steps: int) -> None:
        """Cut the collected chunks into each prompt's tensors (`features.{i}.{name}`).

        One forward over the padded batch when `steps` is 0; otherwise, for each prompt in
        turn, its prompt forward and then one forward per generated token."""
        for i, chunks in enumerate(self.chunks):
            if steps == 0:
                (chunk,) = chunks
                parts = [{n: t[b, : r.n_prompt] for n, t in chunk.items()}
                         for b, r in enumerate(records)]  # fmt: skip
            else:
                per = steps + 1
                parts = [_join(chunks[b * per : (b + 1) * per]) for b in range(len(records))]
            for record, part in zip(records, parts):
                for name, t in part.items():
                    record.tensors[f"features.{i}.{name}"] = t

    def meta(self) -> list[dict]:
        return [
            {"name": d.name, "hook": d.hook_out, "hook_in": d.hook_in, "layer": d.layer,
             "architecture": d.architecture, "d_sae": d.d_sae, "path": d.path,
             "splice": self.splice, "error_term": self.error_term, "top_k": self.top_k}
            for d in self.dicts
        ]  # fmt: skip


def _join(chunks: Iterable[dict]) -> dict:
    """A prompt's forwards ([1 t ...] each) as one [pos ...] run; top-k widths may differ
    between forwards (top_k=None), so narrower ones are padded with zeros."""
    chunks = list(chunks)
    k = max(c["values"].shape[-1] for c in chunks)

    def pad(t):
        return torch.nn.functional.pad(t, (0, k - t.shape[-1]))

    return {
        name: torch.cat(
            [pad(c[name][0]) if name in ("values", "indices") else c[name][0] for c in chunks]
        )  # fmt: skip
        for name in chunks[0]
    }
