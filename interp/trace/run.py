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

from interp import validate
from interp.errors import InterpError
from interp.features.attach import attach
from interp.models.devices import input_device
from interp.prompts import encode_text
from interp.trace import assemble, frames, hooks, kinds, v4_attention
from interp.trace.facts import ModelFacts
from interp.trace.generate import generate
from interp.trace.result import PromptRecord, Trace
from interp.trace.routers import routers
from interp.trace.sampling import Sampling
from interp.vocab import Hook

DEFAULT_CAPTURE = ("residual", "attention", "routing", "shapes")
QUERY_POSITIONS = ("last", "all")


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
            records = [generate(run, ids, max_new_tokens, sampling) for ids in sequences]
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

    @contextlib.contextmanager
    def hooked(self, rows, lengths, batch: int, n_keys=None):
        """The user's hooks, then the capture hooks, installed for every forward run inside:
        yields the `Capture` and the raw-capture dict they fill (generation takes both after
        each step, so its hooks are registered once)."""
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
        # The user's hooks first: what is captured is what the model used.
        dense = "routing_dense" in self.groups
        handles = hooks.router_hooks(captured, self.routers, batch, dense)
        if "attention" in self.groups and self.facts.n_streams > 1:  # DeepSeek-V4: no hook_pattern
            handles += v4_attention.attention_handles(
                self.model, self.facts, lambda layer: hooks.attention_hook(
                    captured, layer, self.keep_full, rows, lengths
                ), lambda: captured.n_keys, captured.compressed.put if self.keep_full else None,
            )  # fmt: skip
        handles += hooks.pattern_hooks(captured)
        try:
            with self.model.hooks(fwd_hooks=self.user_hooks + capture_hooks), _bridge_faults():
                yield captured, raw_store
        finally:
            for handle in handles:
                handle.remove()

    def call(self, ids, past=None, cache=True):
        """One forward of the (hooked) model: logits, and the KV cache when `cache`."""
        ids = ids.to(self.device)
        if not cache:  # one forward, no generation: a KV cache would only take memory
            return self.model(ids), None
        if past is None:
            return self.model(ids, return_type="logits_and_cache", use_cache=True)
        return self.model(ids, return_type="logits_and_cache", past_key_values=past)

    def with_user_hooks(self, ids):
        """Logits of a forward with the user's hooks only (no capture, no cache)."""
        with self.model.hooks(fwd_hooks=self.user_hooks), _bridge_faults():
            return self.model(ids.to(self.device))

    def forward(self, ids, rows, lengths=None, cache=True):
        """One hooked forward over `ids` [batch pos]: (Capture, raw captures, logits, cache)."""
        lengths = lengths or [ids.shape[1]] * ids.shape[0]
        with self.hooked(rows, lengths, ids.shape[0]) as (captured, raw_store):
            logits, past = self.call(ids, cache=cache)
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
        captured, raw, logits, _ = self.forward(ids, rows, lengths=lengths, cache=False)
        records = []
        for b, n in enumerate(lengths):
            tensors = assemble.slice_capture(captured, b, n)
            tensors.update({name: assemble.positions(name, t[b], n) for name, t in raw.items()})
            logprob, ent = assemble.token_stats(logits[b, :n], ids[b, :n])
            query_logits = logits[b, n - 1 : n].float().cpu()
            records.append(
                PromptRecord(ids[b, :n].clone(), n, logprob, ent, [n - 1], query_logits, tensors)
            )
        return records
