"""Re-running the model with a dictionary: feature ablation and steering hooks, and the
dictionary's metrics (reconstruction, and cross-entropy clean / spliced / zero-ablated).

    hooks = ablate_features(sae, [812])          # fwd_hooks: one forward, or every generated one
    interp.trace(model, prompt, fwd_hooks=hooks, max_new_tokens=10)
    steer_features(sae, {812: 8.0})              # add 8 units of feature 812 at every position

An edit changes the feature activations a, then adds decode(a') - decode(a) to the hooked
activation, so the dictionary's reconstruction error stays in the forward pass untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from interp.errors import InterpError
from interp.features import metrics
from interp.features.attach import dictionaries, dictionary_hooks, flat
from interp.features.dictionary import Dictionary
from interp.vocab import Hook


def _checked(d: Dictionary, values: Mapping, what: str) -> dict[int, float]:
    out = {}
    for feature, value in values.items():
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < d.d_sae:
            raise InterpError(f"{what}: feature {feature!r} is not in [0, {d.d_sae}) of {d.name}")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InterpError(f"{what}: the value for feature {feature} must be a number")
        out[feature] = float(value)
    return out


def edit_features(
    dictionary, *, clamp: Mapping[int, float] | None = None, add: Mapping[int, float] | None = None
) -> list[Hook]:
    """fwd_hooks that clamp features to an activation (`clamp`: feature -> value) and add to
    others' activations (`add`: feature -> amount)."""
    (d,) = dictionaries(dictionary)
    clamp_, add_ = _checked(d, clamp or {}, "clamp"), _checked(d, add or {}, "add")
    if not clamp_ and not add_:
        raise InterpError("edit_features: give clamp= or add= (feature -> value)")

    def edit(d: Dictionary, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        acts = d.encode(x)
        edited = acts.clone()
        for feature, value in clamp_.items():
            edited[..., feature] = value
        for feature, value in add_.items():
            edited[..., feature] += value
        return target + (d.decode(edited, x) - d.decode(acts, x))

    return dictionary_hooks(d, edit)


def ablate_features(dictionary, features: Sequence[int]) -> list[Hook]:
    """fwd_hooks that zero `features` wherever they fire."""
    return edit_features(dictionary, clamp=dict.fromkeys(features, 0.0))


def steer_features(dictionary, coefficients: Mapping[int, float]) -> list[Hook]:
    """fwd_hooks that add `coefficient` units of each feature (its decoder row, times the
    coefficient) at every position."""
    return edit_features(dictionary, add=coefficients)


def _cross_entropy(traces) -> float:
    """Mean next-token loss over every predicted token of every prompt."""
    logprobs = torch.cat([r.logprob[1:] for t in traces for r in t.records])
    return float(-logprobs.double().mean())


def dictionary_metrics(model, dictionary, prompts, *, batch_size: int = 8) -> dict[str, float]:
    """l0, explained variance, mse, cosine, and cross-entropy clean / spliced / zero-ablated
    with the loss recovered, over `prompts` (token-weighted)."""
    import interp

    (d,) = dictionaries(dictionary)
    if isinstance(prompts, torch.Tensor):  # token ids: one sequence, or a [batch, pos] tensor
        prompts = list(prompts) if prompts.ndim == 2 else [prompts]
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise InterpError("dictionary_metrics: no prompts given")
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    hooks = sorted({d.hook_in, d.hook_out})
    zero = [(d.hook_out, lambda t, hook: torch.zeros_like(t))]
    clean, spliced, zeroed = [], [], []
    for batch in batches:
        clean.append(interp.trace(model, batch, capture=hooks))
        spliced.append(interp.trace(model, batch, capture=[], features=[d], splice=True))
        zeroed.append(interp.trace(model, batch, capture=[], fwd_hooks=zero))
    x = torch.cat([flat(t.tensor(d.hook_in, p)) for t in clean for p in range(len(t.records))])
    target = torch.cat(
        [flat(t.tensor(d.hook_out, p)) for t in clean for p in range(len(t.records))]
    )
    acts, recon = d.forward(x)
    out = metrics.reconstruction(target, recon, acts)
    losses = {"ce_clean": _cross_entropy(clean), "ce_spliced": _cross_entropy(spliced),
              "ce_zero": _cross_entropy(zeroed)}  # fmt: skip
    out.update(losses)
    out["loss_recovered"] = metrics.loss_recovered(
        losses["ce_clean"], losses["ce_spliced"], losses["ce_zero"]
    )
    out["tokens"] = len(x)
    return out
