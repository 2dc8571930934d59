"""`trace(model, prompts)`: run once (or generate), capture only what is asked, hand back data.

The trace is the one way data leaves the model. Analyses read its frames and tensors; the only
way back into the model is `fwd_hooks` (TL-style (hook name, fn) pairs, e.g. ablations),
declared up front and active for the whole run.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from interp import capture as cap_mod
from interp import frames
from interp import routers as routers_mod
from interp.errors import InterpError
from interp.prompts import encode
from interp.sampling import Sampling, entropy, kv_cache_bytes, measured_cache_bytes

DEFAULT_CAPTURE = ("residual", "attention", "routing", "shapes")


@dataclass
class PromptRecord:
    """Everything captured for one prompt (and its continuation), positions 0..T-1."""

    ids: torch.Tensor  # [T]
    n_prompt: int
    logprob: torch.Tensor  # [T] log p(token | prefix); nan at 0
    entropy: torch.Tensor  # [T] entropy of the distribution that predicted the token
    query_positions: list[int]
    query_logits: torch.Tensor  # [nq, vocab]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    sampling: list[dict] = field(default_factory=list)
    kv_cache: list[dict] = field(default_factory=list)


def trace(
    model,
    prompts: str | Sequence[str] | torch.Tensor | Sequence[torch.Tensor],
    *,
    max_new_tokens: int = 0,
    sampling: Sampling | None = None,
    capture: Iterable[str] = DEFAULT_CAPTURE,
    fwd_hooks: Sequence[tuple[str, object]] = (),
    attention_budget_mb: float = 256,
    query_positions: str = "last",
) -> Trace:
    """Run `model` on `prompts` and capture `capture` (groups or TL hook names).

    Groups: residual (resid_pre / attn_out / mlp_out / resid_post and per-head z), attention
    (patterns, or streaming reductions past the budget), routing (MoE router logits), shapes.
    `query_positions`: "last" keeps full attention rows for the last prompt position and every
    generated one; "all" keeps every row (that is, full patterns).
    """
    sampling = sampling or Sampling()
    if max_new_tokens < 0:
        raise InterpError("max_new_tokens must be >= 0")
    # The bridge rebuilds hook_dict on every access (~1 ms): read it once per trace.
    hook_names = dict.fromkeys(model.hook_dict)
    groups, raw = _parse_capture(hook_names, capture)
    sequences = _sequences(model, prompts)
    longest = max(len(s) for s in sequences) + max_new_tokens
    if longest > model.cfg.n_ctx:
        raise InterpError(
            f"prompt + continuation is {longest} tokens; context is {model.cfg.n_ctx}"
        )
    cfg = model.cfg
    full_bytes = cfg.n_layers * cfg.n_heads * longest * longest * 4 * len(sequences)
    keep_full = query_positions == "all" or full_bytes <= attention_budget_mb * 2**20
    run = _Runner(model, hook_names, groups, raw, list(fwd_hooks), keep_full)
    with torch.no_grad():
        if max_new_tokens == 0:
            records = run.forward_batch(sequences)
        else:
            records = [run.generate(ids, max_new_tokens, sampling) for ids in sequences]
    meta = {
        "model": getattr(model, "interp_name", cfg.model_name),
        "cfg": _cfg_summary(model, hook_names),
        "capture": sorted(groups) + raw,
        "max_new_tokens": max_new_tokens,
        "sampling": sampling.as_dict(),
        "full_attention": keep_full,
        "shapes": run.shapes,
        "command": shlex.join(sys.argv),
    }
    return Trace(records, meta, model=model)


class Trace:
    """Captured data: long-form frames (see `FRAMES`) and per-prompt tensors."""

    FRAMES = frames.BUILDERS

    def __init__(self, records, meta: dict, model=None, saved_frames: dict | None = None):
        self.records: list[PromptRecord] = records
        self.meta = meta
        self._frames: dict[str, pd.DataFrame] = dict(saved_frames or {})
        self.tokenizer = getattr(model, "tokenizer", None)
        # References (no copies) to what analyses need to read the stream out as logits.
        self.readout = (lambda x: model.unembed(model.ln_final(x))) if model is not None else None
        self._model = model

    @functools.cached_property
    def weights(self) -> dict[str, torch.Tensor]:
        """W_O [L, H, d_head, d], W_U [d, vocab], b_U [vocab]; built on first use (stacking
        30 layers' W_O costs as much as a short forward pass). Empty for a loaded trace."""
        if self._model is None:
            return {}
        return {"W_O": self._model.W_O, "W_U": self._model.W_U, "b_U": self._model.b_U}

    def frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            if not self.records:
                raise InterpError(f"this saved trace has no '{name}' frame")
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

    def save(self, directory: str | Path) -> Path:
        """Frames as parquet + meta as JSON: enough to rebuild reports without the model."""
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name in frames.BUILDERS:
                self.frame(name).to_parquet(directory / f"{name}.parquet", index=False)
            (directory / "meta.json").write_text(json.dumps(self.meta, indent=1, default=str))
        except OSError as exc:
            raise InterpError(f"cannot write the trace to {directory}: {exc.strerror}") from None
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Trace:
        directory = Path(directory)
        if not (directory / "meta.json").is_file():
            raise InterpError(f"{directory} holds no saved trace (meta.json missing)")
        saved = {p.stem: pd.read_parquet(p) for p in directory.glob("*.parquet")}
        return cls([], json.loads((directory / "meta.json").read_text()), saved_frames=saved)


def _parse_capture(hook_names, capture: Iterable[str]) -> tuple[set[str], list[str]]:
    groups, raw = set(), []
    for name in capture:
        if name in cap_mod.GROUPS:
            groups.add(name)
        elif name in hook_names:
            raw.append(name)
        else:
            raise InterpError(
                f"unknown capture {name!r}: use one of {sorted(cap_mod.GROUPS)} or a hook name "
                f"such as blocks.0.attn.hook_pattern"
            )
    return groups, raw


def _sequences(model, prompts) -> list[torch.Tensor]:
    if isinstance(prompts, torch.Tensor):
        prompts = list(prompts) if prompts.ndim == 2 else [prompts]
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise InterpError("no prompts given")
    if isinstance(items[0], torch.Tensor):
        for ids in items:
            if ids.numel() == 0:
                raise InterpError("the prompt is empty")
            if ids.min() < 0 or ids.max() >= model.cfg.d_vocab:
                raise InterpError(f"token ids must lie in [0, {model.cfg.d_vocab})")
        return [ids.long() for ids in items]
    return [encode(model.tokenizer, text, model.cfg.n_ctx) for text in items]


def _cfg_summary(model, hook_names) -> dict:
    cfg = model.cfg
    routed = routers_mod.routers(model)
    summary = {
        "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
        "d_head": cfg.d_head, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx,
        "n_key_value_heads": getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        "moe_layers": list(routed),
    }  # fmt: skip
    if routed:
        first = next(iter(routed.values()))
        summary.update(
            n_experts=first.n_experts, top_k=first.top_k, n_shared=first.n_shared,
            router=first.family,
        )  # fmt: skip
    return summary


class _Runner:
    """Forward passes with the capture hooks installed; assembles PromptRecords."""

    def __init__(self, model, hook_names, groups, raw, user_hooks, keep_full):
        self.model, self.hook_names, self.groups, self.raw = model, hook_names, groups, raw
        self.user_hooks, self.keep_full = user_hooks, keep_full
        self.shapes: list = []
        routed = groups & {"routing", "routing_dense"}
        self.routers = routers_mod.routers(model) if routed else {}

    def _forward(self, ids, rows, past=None, lengths=None):
        capture = cap_mod.Capture()
        lengths = lengths or [ids.shape[1]] * ids.shape[0]
        hooks = cap_mod.build_hooks(
            self.model,
            capture,
            self.groups,
            self.keep_full,
            rows,
            lengths,
            self.hook_names,
        )
        raw_store: dict[str, torch.Tensor] = {}
        for name in self.raw:
            # Stored under the name asked for: TL aliases resolve to another hook.name.
            hooks.append(
                (name, lambda t, hook, name=name: raw_store.__setitem__(name, t.detach().clone()))
            )
        dense = "routing_dense" in self.groups
        handles = cap_mod.router_hooks(capture, self.routers, ids.shape[0], dense)
        try:
            with self.model.hooks(fwd_hooks=hooks + self.user_hooks):
                if past is None:
                    logits, past = self.model(ids, return_type="logits_and_cache", use_cache=True)
                else:
                    logits, past = self.model(
                        ids, return_type="logits_and_cache", past_key_values=past
                    )
        finally:
            for handle in handles:
                handle.remove()
        if capture.shapes:  # one block's shapes, once, from the first forward
            self.groups.discard("shapes")
            self.shapes = [
                (name, list(shape), cap_mod.dims_of(shape, self.model.cfg, *ids.shape))
                for name, shape in capture.shapes
            ]
        return capture, raw_store, logits, past

    def forward_batch(self, sequences: list[torch.Tensor]) -> list[PromptRecord]:
        # Right padding: causal attention never lets a real token see the pads after it.
        lengths = [len(s) for s in sequences]
        ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
        for b, seq in enumerate(sequences):
            ids[b, : len(seq)] = seq
        rows = torch.tensor([[n - 1] for n in lengths])
        capture, raw, logits, _ = self._forward(ids, rows, lengths=lengths)
        records = []
        for b, n in enumerate(lengths):
            tensors = frames.slice_capture(capture, b, n, self.model, release=b == len(lengths) - 1)
            tensors.update({name: _positions(name, t[b], n) for name, t in raw.items()})
            logprob, ent = _token_stats(logits[b, :n], ids[b, :n])
            records.append(
                PromptRecord(
                    ids[b, :n].clone(),
                    n,
                    logprob,
                    ent,
                    [n - 1],
                    logits[b, n - 1 : n].clone(),
                    tensors,
                )
            )
        return records

    def generate(self, prompt: torch.Tensor, steps: int, sampling: Sampling) -> PromptRecord:
        generator = torch.Generator().manual_seed(sampling.seed)
        n0 = len(prompt)
        capture, raw, logits, past = self._forward(prompt[None], torch.tensor([[n0 - 1]]))
        parts = [frames.slice_capture(capture, 0, n0, self.model, release=True)]
        raw_parts = {name: [t[0]] for name, t in raw.items()}
        ids, step_logits = prompt.tolist(), [logits[0, -1]]
        logprob, ent = _token_stats(logits[0], prompt)
        logprobs, entropies = list(logprob), list(ent)
        record = PromptRecord(prompt, n0, logprob, ent, [n0 - 1], logits[0, -1:], {})
        for step in range(1, steps + 1):
            last = step_logits[-1]
            token = sampling.choose(last, generator)
            record.sampling += frames.sampling_rows(
                step, len(ids), last, sampling, token, self.model
            )
            log_dist = last.float().log_softmax(-1)
            logprobs.append(log_dist[token])
            entropies.append(entropy(last))
            ids.append(token)
            capture, raw_step, logits, past = self._forward(
                torch.tensor([[token]]), torch.tensor([[0]]), past
            )
            parts.append(
                frames.slice_capture(capture, 0, 1, self.model, keys=len(ids), release=True)
            )
            for name, t in raw_step.items():
                raw_parts[name].append(t[0])
            step_logits.append(logits[0, -1])
            held, mha = kv_cache_bytes(self.model.cfg, len(ids))
            record.kv_cache.append(
                {
                    "step": step,
                    "positions": len(ids),
                    "bytes": held,
                    "mha_bytes": mha,
                    "measured_bytes": measured_cache_bytes(past),
                }  # fmt: skip
            )
        record.ids = torch.tensor(ids)
        record.logprob, record.entropy = torch.stack(logprobs), torch.stack(entropies)
        record.query_positions = list(range(n0 - 1, len(ids)))
        record.query_logits = torch.stack(step_logits)
        record.tensors = frames.concat_steps(parts, len(ids))
        record.tensors.update({name: _join_steps(name, ts) for name, ts in raw_parts.items()})
        return record


def _is_pattern(name: str) -> bool:
    # TL's [batch, head, query, key] hooks; every other hook is [batch, pos, ...].
    return name.endswith(("hook_pattern", "hook_attn_scores"))


def _positions(name: str, t: torch.Tensor, n: int) -> torch.Tensor:
    """One prompt's raw capture (batch axis gone) cut to its n real positions."""
    return t[:, :n, :n] if _is_pattern(name) else t[:n]


def _join_steps(name: str, steps: list[torch.Tensor]) -> torch.Tensor:
    """A raw capture over prompt + generated tokens, as if from one forward pass.

    Each KV-cache step sees one query; attention rows are zero-padded to the final key count.
    """
    if not _is_pattern(name):
        return torch.cat(steps, dim=0)
    keys = steps[-1].shape[-1]
    return torch.cat([F.pad(t, (0, keys - t.shape[-1])) for t in steps], dim=-2)


def _token_stats(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p of each token given its prefix, and the entropy of the predicting distribution."""
    chosen, ent = [], []
    # In row chunks: a [T, vocab] log_softmax and its exp would triple the logits' memory.
    for start in range(0, len(ids) - 1, 256):
        logp = logits[start : start + 256].float().log_softmax(-1)[: len(ids) - 1 - start]
        chosen.append(logp.gather(-1, ids[start + 1 : start + 257, None])[:, 0])
        ent.append(-(logp.exp() * logp).sum(-1))
    nan = torch.tensor([float("nan")])
    return torch.cat([nan, *chosen]), torch.cat([nan, *ent])
