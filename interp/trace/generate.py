"""Traced generation: one hooked forward over the prompt, then one per new token over that
token alone, keys from the KV cache.

The step hooks are registered once for the whole loop (`_Runner.hooked`); each step takes
what they wrote (`Capture.take`), so a step costs its forward plus work that does not grow
with the sequence (sampling rows over the vocabulary, memory rows per layer). A model without
a KV cache (TL-native zoo models) reruns the sequence instead.
"""

from __future__ import annotations

import torch

from interp import collector
from interp.trace import assemble
from interp.trace.kv_cache import summary
from interp.trace.memory import memory_rows
from interp.trace.result import PromptRecord
from interp.trace.sampling import Sampling, sampling_rows
from interp.vocab import entropy, log_probs


def generate(run, prompt: torch.Tensor, steps: int, sampling: Sampling) -> PromptRecord:
    """`steps` new tokens after `prompt`, sampled as `sampling` says, captured by `run` (the
    trace's `_Runner`) as if from one forward over prompt + continuation."""
    with collector.paused():  # its sweeps cost ~6% of a traced generation (interp.collector)
        return _generate(run, prompt, steps, sampling)


def _generate(run, prompt: torch.Tensor, steps: int, sampling: Sampling) -> PromptRecord:
    generator = torch.Generator().manual_seed(sampling.seed)
    n0 = len(prompt)
    captured, raw, logits, past = run.forward(prompt[None], torch.tensor([[n0 - 1]]))
    if past is None:  # the model keeps no KV cache (TL-native zoo models)
        return _generate_by_rerunning(run, prompt, steps, sampling, logits, generator)
    parts = [assemble.slice_capture(captured, 0, n0)]
    raw_parts = {name: [t[0]] for name, t in raw.items()}
    ids, step_logits = prompt.tolist(), [logits[0, -1].float().cpu()]
    logprob, ent = assemble.token_stats(logits[0], prompt)
    logprobs, entropies = list(logprob), list(ent)
    record = PromptRecord(prompt, n0, logprob, ent, [n0 - 1], step_logits[0][None], {})
    facts, tokenizer = run.facts, run.model.tokenizer
    record.memory = [{"step": 0, **row} for row in memory_rows(facts, n0, past)]
    with run.hooked(torch.tensor([[0]]), [1], 1, n0 + 1) as (step_capture, raw_store):
        for step in range(1, steps + 1):
            last = step_logits[-1]
            token = sampling.choose(last, generator)
            record.sampling += sampling_rows(step, len(ids), last, sampling, token, tokenizer)
            logprobs.append(log_probs(last)[token])
            entropies.append(entropy(last))
            ids.append(token)
            step_capture.n_keys = len(ids)
            logits, past = run.call(torch.tensor([[token]]), past)
            parts.append(assemble.slice_capture(step_capture.take(), 0, 1, keys=len(ids)))
            for name, t in raw_store.items():
                raw_parts[name].append(t[0])
            raw_store.clear()
            step_logits.append(logits[0, -1].float().cpu())
            rows = memory_rows(facts, len(ids), past)
            record.memory += [{"step": step, **row} for row in rows]
            record.kv_cache.append(summary(rows, facts, step, len(ids)))
    record.ids = torch.tensor(ids)
    record.logprob, record.entropy = torch.stack(logprobs), torch.stack(entropies)
    record.query_positions = list(range(n0 - 1, len(ids)))
    record.query_logits = torch.stack(step_logits)
    record.tensors = assemble.concat_steps(parts, len(ids))
    record.tensors.update({name: assemble.join_steps(name, ts) for name, ts in raw_parts.items()})
    return record


def _generate_by_rerunning(run, prompt, steps, sampling, logits, generator) -> PromptRecord:
    """Generation for a model that keeps no KV cache: each token is chosen from a forward
    over the whole sequence so far (the user's hooks see those forwards), then one forward
    over prompt + continuation captures everything. A single-token step without a cache
    would attend to nothing but itself."""
    ids, rows = prompt.tolist(), []
    last = logits[0, -1].float().cpu()
    for step in range(1, steps + 1):
        token = sampling.choose(last, generator)
        rows += sampling_rows(step, len(ids), last, sampling, token, run.model.tokenizer)
        ids.append(token)
        if step < steps:
            last = run.with_user_hooks(torch.tensor([ids]))[0, -1].float().cpu()
    n0, full = len(prompt), torch.tensor(ids)
    queries = list(range(n0 - 1, len(ids)))
    captured, raw, logits, _ = run.forward(full[None], torch.tensor([queries]), cache=False)
    tensors = assemble.slice_capture(captured, 0, len(ids))
    tensors.update({name: assemble.positions(name, t[0], len(ids)) for name, t in raw.items()})
    logprob, ent = assemble.token_stats(logits[0], full)
    query_logits = logits[0, n0 - 1 :].float().cpu()
    record = PromptRecord(full, n0, logprob, ent, queries, query_logits, tensors)
    record.sampling = rows
    for step in range(steps + 1):  # what a KV cache would hold (nothing to measure)
        memory = memory_rows(run.facts, n0 + step)
        record.memory += [{"step": step, **row} for row in memory]
        if step:
            record.kv_cache.append(summary(memory, run.facts, step, n0 + step))
    return record
