"""`trace(model, prompts)`: run once (or generate), capture only what is asked, hand back data.

The trace is the one way data leaves the model. Analyses read its frames and tensors; the only
way back into the model is `fwd_hooks` (TL-style (hook name, fn) pairs, e.g. ablations),
declared up front and active for the whole run. Which forwards a hook sees: one over the
padded prompt batch [batch pos ...], then, when generating, one per new token over that token
alone [1 1 ...] (the keys come from the KV cache). The capture hooks run after the user's at
every hook point, so the trace records what the model actually used.

Device-agnostic: token ids go to the model's input device (its embedding's; the first GPU of a
split model), captures come back to the CPU as float32 (trace/hooks.py), and everything the
trace keeps from the logits (log-probs, entropies, query logits, sampling) is float32 on the CPU.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from interp import validate
from interp.errors import InterpError
from interp.features.attach import attach
from interp.models.devices import input_device
from interp.prompts import encode_text
from interp.trace import assemble, frames, hooks, kernel, kinds, v4_attention
from interp.trace.facts import ModelFacts
from interp.trace.kv_cache import summary
from interp.trace.memory import memory_rows
from interp.trace.result import PromptRecord, Trace
from interp.trace.routers import routers
from interp.trace.sampling import Sampling, sampling_rows
from interp.vocab import Hook, entropy, log_probs

DEFAULT_CAPTURE = ("residual", "attention", "routing", "shapes")
QUERY_POSITIONS = ("last", "all")
STATS_ELEMENTS = 2**21  # logits per chunk of the per-token log-prob and entropy (8 MB)


def trace(
    model,
    prompts: str | Sequence[str] | torch.Tensor | Sequence[torch.Tensor],
    *,
    max_new_tokens: int = 0,
    sampling: Sampling | None = None,
    capture: Iterable[str] = DEFAULT_CAPTURE,
    fwd_hooks: Sequence[Hook] = (),
    attention_budget_mb: float = 256,
    query_positions: str = "last",
    features=(),
    splice: bool = False,
    error_term: bool = False,
    feature_top_k: int | None = 10,
    prepend_bos: bool | None = None,
) -> Trace:
    """Run `model` on `prompts` and capture `capture` (groups or TL hook names).

    Groups: residual (resid_pre / attn_out / mlp_out / resid_post and per-head z), attention
    (patterns, or streaming reductions past the budget), routing (MoE router logits), shapes.
    `query_positions`: "last" keeps full attention rows for the last prompt position and every
    generated one; "all" keeps every row (that is, full patterns).
    `features`: sparse dictionaries (or their paths, interp.features) whose activations the
    trace keeps, the top `feature_top_k` per token (None: all), in `trace.features` and
    `trace.feature_error`; `splice` puts each reconstruction into the forward pass
    (`error_term`: plus its error, which leaves the forward unchanged).
    `prepend_bos`: text is encoded as the model's tokenizer does by default (BOS where it adds
    one); True / False forces BOS first / none (interp.prompts.encode_text). Token ids are
    used as given. `meta["bos_added"]` says, per prompt, whether a BOS was put first.
    """
    sampling = sampling or Sampling()
    if not isinstance(sampling, Sampling):
        raise InterpError(f"sampling must be an interp.Sampling, not {type(sampling).__name__}")
    max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens", low=0)
    if query_positions not in QUERY_POSITIONS:
        raise InterpError(
            f"query_positions must be one of {QUERY_POSITIONS}, not {query_positions!r}"
        )
    # The bridge rebuilds hook_dict on every access (~1 ms): read it once per trace.
    hook_names = dict.fromkeys(model.hook_dict)
    groups, raw = _parse_capture(hook_names, capture)
    user_hooks = _checked_hooks(hook_names, fwd_hooks)
    attached = attach(model, hook_names, features, splice, error_term, feature_top_k)
    if attached is not None:  # after the user's hooks: features of what the model used
        user_hooks += attached.hooks
    sequences, bos_added = _sequences(model, prompts, prepend_bos)
    facts = ModelFacts.of(model)
    if groups & {"residual", "attention"}:
        kinds.refuse_unreadable(model, facts.layer_kinds, hook_names)
    longest = max(len(s) for s in sequences) + max_new_tokens
    validate.context(max(len(s) for s in sequences), max_new_tokens, facts.n_ctx)
    full_bytes = facts.n_layers * facts.n_heads * longest * longest * 4 * len(sequences)
    keep_full = "attention" in groups and (
        query_positions == "all" or full_bytes <= attention_budget_mb * 2**20
    )
    if keep_full and query_positions == "all":
        frames.check_fits(full_bytes, "the full attention patterns")
    run = _Runner(model, facts, hook_names, groups, raw, user_hooks, keep_full)
    with torch.no_grad():
        if max_new_tokens == 0:
            records = run.forward_batch(sequences)
        else:
            records = [run.generate(ids, max_new_tokens, sampling) for ids in sequences]
    if attached is not None:
        attached.fill(records, max_new_tokens)
    meta = {
        "model": getattr(model, "interp_name", model.cfg.model_name),
        "cfg": facts.as_dict(),
        "capture": sorted(groups) + raw,
        "max_new_tokens": max_new_tokens,
        "sampling": sampling.as_dict(),
        "full_attention": keep_full,
        "device": str(run.device),
        "shapes": run.shapes,
        "command": None,  # set by the CLI, which has one
        "features": attached.meta() if attached is not None else [],
        "bos_added": bos_added,
    }
    if "attention" in groups and not keep_full:
        meta["empty_frames"] = {"attention": (
            f"full patterns ({full_bytes / 2**20:.0f} MB) exceed attention_budget_mb="
            f"{attention_budget_mb:g}; read query_attention, attention_summary, or trace with "
            "query_positions='all'")}  # fmt: skip
    return Trace(records, meta, model=model)


@contextlib.contextmanager
def _bridge_faults():
    """A TransformerLens bridge that maps a module the checkpoint lacks (Granite-4 hybrid
    without position embeddings: model.rotary_emb) fails every forward: one line."""
    try:
        yield
    except RuntimeError as exc:
        if "Original component not set" not in str(exc):
            raise
        raise InterpError(
            f"TransformerLens's bridge for this model cannot run a forward pass ({exc}); "
            "interp cannot trace it"
        ) from None


def _parse_capture(hook_names, capture: Iterable[str]) -> tuple[set[str], list[str]]:
    if isinstance(capture, str):
        capture = [capture]
    groups, raw = set(), []
    for name in capture:
        if name in hooks.GROUPS:
            groups.add(name)
        elif name in hook_names:
            raw.append(name)
        else:
            raise InterpError(
                f"unknown capture {name!r}: use one of {sorted(hooks.GROUPS)} or a hook name"
                f"{_close(name, hook_names, ' such as blocks.0.attn.hook_pattern')}"
            )
    return groups, raw


def _close(name: str, hook_names, otherwise: str = "") -> str:
    matches = difflib.get_close_matches(name, list(hook_names), n=3)
    return f" (did you mean {', '.join(matches)}?)" if matches else otherwise


def _checked_hooks(hook_names, fwd_hooks: Sequence[Hook]) -> list[Hook]:
    """The user's hooks, each wrapped so a failure names the hook and the forward it failed on."""
    out = []
    for item in fwd_hooks:
        if not (isinstance(item, tuple | list) and len(item) == 2 and callable(item[1])):
            raise InterpError("fwd_hooks must be (hook name, function) pairs")
        name, fn = item
        if name not in hook_names:
            raise InterpError(f"fwd_hooks: no hook point {name!r}{_close(name, hook_names)}")
        out.append((name, _guarded(name, fn)))
    return out


def _guarded(name: str, fn):
    def hook(tensor, hook):
        try:
            return fn(tensor, hook)
        except (IndexError, RuntimeError, ValueError) as exc:
            raise InterpError(
                f"fwd_hooks: {name} failed on a tensor of shape {list(tensor.shape)} ({exc}); "
                "when generating, hooks also see one forward per new token, of one position"
            ) from exc

    return hook


def _sequences(model, prompts, prepend_bos=None) -> tuple[list[torch.Tensor], list[bool]]:
    if isinstance(prompts, torch.Tensor):
        if prompts.ndim not in (1, 2):
            raise InterpError(f"token ids must be 1-D or a 2-D batch, not {prompts.ndim}-D")
        prompts = list(prompts) if prompts.ndim == 2 else [prompts]
    if isinstance(prompts, str):
        items = [prompts]
    elif isinstance(prompts, Sequence):
        items = list(prompts)
    else:
        kind = type(prompts).__name__
        raise InterpError(f"prompts must be text, token ids or a list of them, not {kind}")
    if not items:
        raise InterpError("no prompts given")
    if all(isinstance(item, torch.Tensor) for item in items):
        return [validate.token_ids(ids, model.cfg.d_vocab) for ids in items], [False] * len(items)
    if not all(isinstance(item, str) for item in items):
        raise InterpError("prompts must be all text or all token-id tensors, not a mix")
    encoded = [encode_text(model.tokenizer, text, model.cfg.n_ctx, prepend_bos) for text in items]
    return [ids for ids, _ in encoded], [added for _, added in encoded]


class _Runner:
    """Forward passes with the capture hooks installed; assembles PromptRecords."""

    def __init__(self, model, facts, hook_names, groups, raw, user_hooks, keep_full):
        self.facts = facts
        self.model, self.hook_names, self.raw = model, hook_names, raw
        self.groups = set(groups)  # shapes are read from the first forward only
        self.user_hooks, self.keep_full = user_hooks, keep_full
        self.shapes: list = []
        self.device = input_device(model)
        self.routers = routers(model) if self.groups & {"routing", "routing_dense"} else {}

    def _forward(self, ids, rows, past=None, lengths=None, cache=True, n_keys=None):
        lengths = lengths or [ids.shape[1]] * ids.shape[0]
        captured, capture_hooks = hooks.build_hooks(
            self.model, self.groups, len(self.routers), self.keep_full, rows, lengths,
            self.hook_names, self.facts.layer_kinds, n_keys,
        )  # fmt: skip
        raw_store: dict[str, torch.Tensor] = {}
        for name in self.raw:
            # Stored under the name asked for: TL aliases resolve to another hook.name.
            capture_hooks.append(
                (name, lambda t, hook, name=name: raw_store.__setitem__(name, hooks.to_host(t)))
            )
        ids = ids.to(self.device)
        # The user's hooks first: what is captured is what the model used.
        dense = "routing_dense" in self.groups
        handles = hooks.router_hooks(captured, self.routers, ids.shape[0], dense)
        if "attention" in self.groups and self.facts.n_streams > 1:  # DeepSeek-V4: no hook_pattern
            handles += v4_attention.attention_handles(
                self.model, self.facts, lambda layer: hooks.attention_hook(
                    captured, layer, self.keep_full, rows, lengths, n_keys
                ), n_keys,
            )  # fmt: skip
        handles += hooks.pattern_hooks(captured)
        try:
            # The default attention kernel unless a registered hook needs eager (trace.kernel).
            with (
                self.model.hooks(fwd_hooks=self.user_hooks + capture_hooks),
                _bridge_faults(),
                kernel.default_attention(self.model),
            ):
                if not cache:  # one forward, no generation: a KV cache would only take memory
                    logits = self.model(ids)
                elif past is None:
                    logits, past = self.model(ids, return_type="logits_and_cache", use_cache=True)
                else:
                    logits, past = self.model(
                        ids, return_type="logits_and_cache", past_key_values=past
                    )
        finally:
            for handle in handles:
                handle.remove()
        if captured.shapes:  # one block's shapes, once, from the first forward
            self.groups.discard("shapes")
            self.shapes = [
                (name, list(shape), hooks.dims_of(shape, self.model.cfg, *ids.shape))
                for name, shape in captured.shapes
            ]
        return captured, raw_store, logits, past

    def forward_batch(self, sequences: list[torch.Tensor]) -> list[PromptRecord]:
        # Right padding: causal attention never lets a real token see the pads after it.
        lengths = [len(s) for s in sequences]
        ids = torch.zeros(len(sequences), max(lengths), dtype=torch.long)
        for b, seq in enumerate(sequences):
            ids[b, : len(seq)] = seq
        rows = torch.tensor([[n - 1] for n in lengths])
        captured, raw, logits, _ = self._forward(ids, rows, lengths=lengths, cache=False)
        records = []
        for b, n in enumerate(lengths):
            tensors = assemble.slice_capture(captured, b, n)
            tensors.update({name: _positions(name, t[b], n) for name, t in raw.items()})
            logprob, ent = _token_stats(logits[b, :n], ids[b, :n])
            query_logits = logits[b, n - 1 : n].float().cpu()
            records.append(
                PromptRecord(ids[b, :n].clone(), n, logprob, ent, [n - 1], query_logits, tensors)
            )
        return records

    def generate(self, prompt: torch.Tensor, steps: int, sampling: Sampling) -> PromptRecord:
        generator = torch.Generator().manual_seed(sampling.seed)
        n0 = len(prompt)
        captured, raw, logits, past = self._forward(prompt[None], torch.tensor([[n0 - 1]]))
        if past is None:  # the model keeps no KV cache (TL-native zoo models)
            return self._generate_by_rerunning(prompt, steps, sampling, logits, generator)
        parts = [assemble.slice_capture(captured, 0, n0)]
        raw_parts = {name: [t[0]] for name, t in raw.items()}
        ids, step_logits = prompt.tolist(), [logits[0, -1].float().cpu()]
        logprob, ent = _token_stats(logits[0], prompt)
        logprobs, entropies = list(logprob), list(ent)
        record = PromptRecord(prompt, n0, logprob, ent, [n0 - 1], step_logits[0][None], {})
        facts = self.facts
        record.memory = [{"step": 0, **row} for row in memory_rows(facts, n0, past)]
        for step in range(1, steps + 1):
            last = step_logits[-1]
            token = sampling.choose(last, generator)
            record.sampling += sampling_rows(
                step, len(ids), last, sampling, token, self.model.tokenizer
            )
            logprobs.append(log_probs(last)[token])
            entropies.append(entropy(last))
            ids.append(token)
            captured, raw_step, logits, past = self._forward(
                torch.tensor([[token]]), torch.tensor([[0]]), past, n_keys=len(ids)
            )
            parts.append(assemble.slice_capture(captured, 0, 1, keys=len(ids)))
            for name, t in raw_step.items():
                raw_parts[name].append(t[0])
            step_logits.append(logits[0, -1].float().cpu())
            rows = memory_rows(facts, len(ids), past)
            record.memory += [{"step": step, **row} for row in rows]
            record.kv_cache.append(summary(rows, facts, step, len(ids)))
        record.ids = torch.tensor(ids)
        record.logprob, record.entropy = torch.stack(logprobs), torch.stack(entropies)
        record.query_positions = list(range(n0 - 1, len(ids)))
        record.query_logits = torch.stack(step_logits)
        record.tensors = assemble.concat_steps(parts, len(ids))
        record.tensors.update({name: _join_steps(name, ts) for name, ts in raw_parts.items()})
        return record

    def _generate_by_rerunning(self, prompt, steps, sampling, logits, generator) -> PromptRecord:
        """Generation for a model that keeps no KV cache: each token is chosen from a forward
        over the whole sequence so far (the user's hooks see those forwards), then one forward
        over prompt + continuation captures everything. A single-token step without a cache
        would attend to nothing but itself."""
        ids, rows = prompt.tolist(), []
        last = logits[0, -1].float().cpu()
        for step in range(1, steps + 1):
            token = sampling.choose(last, generator)
            rows += sampling_rows(step, len(ids), last, sampling, token, self.model.tokenizer)
            ids.append(token)
            if step < steps:
                with self.model.hooks(fwd_hooks=self.user_hooks), _bridge_faults():
                    last = self.model(torch.tensor([ids], device=self.device))[0, -1]
                last = last.float().cpu()
        n0, full = len(prompt), torch.tensor(ids)
        queries = list(range(n0 - 1, len(ids)))
        captured, raw, logits, _ = self._forward(full[None], torch.tensor([queries]), cache=False)
        tensors = assemble.slice_capture(captured, 0, len(ids))
        tensors.update({name: _positions(name, t[0], len(ids)) for name, t in raw.items()})
        logprob, ent = _token_stats(logits[0], full)
        query_logits = logits[0, n0 - 1 :].float().cpu()
        record = PromptRecord(full, n0, logprob, ent, queries, query_logits, tensors)
        record.sampling = rows
        for step in range(steps + 1):  # what a KV cache would hold (nothing to measure)
            memory = memory_rows(self.facts, n0 + step)
            record.memory += [{"step": step, **row} for row in memory]
            if step:
                record.kv_cache.append(summary(memory, self.facts, step, n0 + step))
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
    """log p of each token given its prefix, and the entropy of the predicting distribution:
    computed in float32 where the logits are, returned on the CPU."""
    chosen, ent, ids = [], [], ids.to(logits.device)
    # In row chunks small enough for the allocator to reuse (a few MB): a [pos vocab] temporary
    # would triple the logits' memory, and fresh large blocks cost a page fault per 4 kB.
    rows = max(1, STATS_ELEMENTS // logits.shape[-1])
    for start in range(0, len(ids) - 1, rows):
        logp = log_probs(logits[start : start + rows])[: len(ids) - 1 - start]
        chosen.append(logp.gather(-1, ids[start + 1 : start + 1 + rows, None])[:, 0])
        ent.append(-(logp.exp() * logp).sum(-1))
    nan = torch.tensor([float("nan")])
    return torch.cat([nan, *[c.cpu() for c in chosen]]), torch.cat([nan, *[e.cpu() for e in ent]])
