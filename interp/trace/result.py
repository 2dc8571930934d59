"""`Trace`: what one run captured, as long-form frames and per-prompt tensors."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from interp.errors import InterpError
from interp.models.devices import input_device, model_dtype
from interp.text import decode
from interp.trace import frames, v4_attention
from interp.trace.facts import ModelFacts


@dataclass
class PromptRecord:
    """Everything captured for one prompt (and its continuation), positions 0..T-1."""

    ids: torch.Tensor  # [pos]
    n_prompt: int
    logprob: torch.Tensor  # [pos] log p(token | prefix); nan at 0
    entropy: torch.Tensor  # [pos] entropy of the distribution that predicted the token
    query_positions: list[int]
    query_logits: torch.Tensor  # [query vocab]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sampling: list[dict] = field(default_factory=list)
    kv_cache: list[dict] = field(default_factory=list)  # per-step totals of `memory`
    memory: list[dict] = field(default_factory=list)  # per step, layer, kind (trace.memory)


class Trace:
    """Captured data: long-form frames (see `FRAMES`) and per-prompt tensors."""

    FRAMES = frames.BUILDERS

    def __init__(self, records, meta: dict, model=None, saved_frames: dict | None = None):
        self.records: list[PromptRecord] = records
        self.meta = meta
        self._frames: dict[str, pd.DataFrame] = dict(saved_frames or {})
        self.tokenizer = getattr(model, "tokenizer", None)
        # References (no copies) to what analyses need to read the stream out as logits.
        self.readout = _readout(model) if model is not None else None
        self._model = model

    @functools.cached_property
    def facts(self) -> ModelFacts:
        return ModelFacts.from_dict(self.meta["cfg"])

    @functools.cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        """W_O [layer head d_head d_model], W_U [d_model vocab], b_U [vocab]; built on first use
        (stacking 30 layers' W_O costs as much as a short forward pass). Empty when loaded.
        float32 on the CPU, like the captures they are multiplied with."""
        if self._model is None:
            return {}
        W_O = (  # DeepSeek-V4's grouped output projection: TL has no W_O for it
            v4_attention.grouped_W_O(self._model)
            if hasattr(self._model, "hc_head")
            else self._model.W_O
        )
        weights = {"W_O": W_O, "W_U": self._model.W_U, "b_U": self._model.b_U}
        return {name: w.detach().float().cpu() for name, w in weights.items()}

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            if not self.records:
                raise InterpError(f"this saved trace has no '{name}' frame")
            reason = self.meta.get("empty_frames", {}).get(name)
            if reason:
                warnings.warn(f"trace.{name} is empty: {reason}", stacklevel=3)
            self._frames[name] = frames.BUILDERS[name](self)
        return self._frames[name]

    def __getattr__(self, name: str):
        if name in frames.BUILDERS:
            return self.frame(name)
        raise AttributeError(name)

    def tensor(self, name: str, prompt: int = 0) -> torch.Tensor:
        try:
            return self.records[prompt].tensors[name]
        except (IndexError, KeyError):
            raise InterpError(f"no tensor '{name}' captured for prompt {prompt}") from None

    def texts(self) -> list[tuple[str, str]]:
        """(prompt, continuation) text of each prompt, each decoded as one span (characters
        that byte-level tokens split come out whole); a saved trace keeps them in its meta."""
        if "texts" in self.meta:
            return [tuple(pair) for pair in self.meta["texts"]]
        if not self.records:  # saved before texts were kept: the token texts, joined
            tokens = self.frame("tokens")
            return [
                ("".join(rows.token[~rows.generated]), "".join(rows.token[rows.generated]))
                for _, rows in tokens.groupby("prompt", sort=True)
            ]
        return [
            (
                decode(self.tokenizer, r.ids[: r.n_prompt]),
                decode(self.tokenizer, r.ids[r.n_prompt :]),
            )
            for r in self.records
        ]

    def save(self, directory: str | Path) -> Path:
        """Frames as parquet + meta as JSON: enough to rebuild reports without the model."""
        directory = Path(directory)
        meta = {**self.meta, "texts": self.texts()}
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name in frames.BUILDERS:
                self.frame(name).to_parquet(directory / f"{name}.parquet", index=False)
            (directory / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        except OSError as exc:
            raise InterpError(f"cannot write the trace to {directory}: {exc.strerror}") from None
        return directory

    # -- interactive views: interp.report.views draws them; only this call lives here --
    def show(self, kind: str = "attention", prompt: int | Sequence[int] = 0, **options):
        """An offline interactive view (attention, lens, routing, journey) of one prompt, or
        of several side by side; a notebook draws it, `.save(path)` writes it as a page."""
        from interp.report.views import show

        return show(self, kind, prompt, **options)

    # -- end of views --
    @classmethod
    def load(cls, directory: str | Path) -> Trace:
        directory = Path(directory)
        if not (directory / "meta.json").is_file():
            raise InterpError(f"{directory} holds no saved trace (meta.json missing)")
        from interp.trace.saved import read_frames, read_meta

        meta = read_meta(directory)
        return cls([], meta, saved_frames=read_frames(directory, meta))


def _readout(model):
    """The model's own final norm + unembedding, as a function of a captured (float32, CPU)
    residual [... d] ([... N d] with several streams, collapsed by the model's own hc_head):
    run on the norm's device in the model's dtype, so the last layer's readout is what the
    model computed; the logits come back float32 on the CPU. `collapse=False` reads one
    stream [... d] of such a model as if it were the collapsed one (the per-stream lens)."""
    norm_weights = list(model.ln_final.parameters())
    device = norm_weights[0].device if norm_weights else input_device(model)
    dtype = model_dtype(model)

    # DeepSeek-V4 keeps several streams [..., N, d]: its own head collapses them first.
    hc_head = getattr(model, "hc_head", None)

    def readout(x: torch.Tensor, collapse: bool = True) -> torch.Tensor:
        x = x.to(device, dtype)
        if hc_head is not None and collapse:
            x = hc_head(x.reshape(-1, 1, *x.shape[-2:])).reshape(*x.shape[:-2], x.shape[-1])
        return model.unembed(model.ln_final(x)).float().cpu()

    return readout
