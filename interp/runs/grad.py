"""Running the model with gradients: the one place that does (the trace runs under no_grad).

`with_grad(model, ids, names, metric)` runs one forward with gradients on, keeps the activation
at each hook point in `names`, and takes the gradient of the scalar `metric(logits)` with respect
to each: one forward and one backward, whatever the number of hook points. The activations stay
in the graph (nothing is detached), so each gradient is the total derivative: it includes the
paths through every later hook point. `torch.autograd.grad` fills no parameter's .grad.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from interp.errors import InterpError
from interp.models.devices import input_device
from interp.vocab import Hook


@dataclass
class Gradients:
    metric: float
    logits: torch.Tensor  # [batch pos vocab], detached
    activations: dict[str, torch.Tensor]  # hook name -> activation, detached, float32
    grads: dict[str, torch.Tensor]  # hook name -> d metric / d activation, float32


def with_grad(
    model,
    ids: torch.Tensor,
    names: Sequence[str],
    metric: Callable[[torch.Tensor], torch.Tensor],
    fwd_hooks: Sequence[Hook] = (),
) -> Gradients:
    """One forward of `ids` ([pos] or [batch pos]) with gradients, then one backward of
    `metric(logits)` to the activations at `names` (TL hook names)."""
    hook_dict = model.hook_dict  # the bridge rebuilds it on every access
    missing = [name for name in names if name not in hook_dict]
    if missing:
        raise InterpError(f"no hook point {missing[0]!r}")
    ids = (ids[None] if ids.ndim == 1 else ids).to(input_device(model))
    kept: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor, hook) -> torch.Tensor:
        # With frozen parameters nothing upstream needs grad: the first hook starts the graph.
        if not tensor.requires_grad:
            tensor = tensor.detach().requires_grad_(True)
        kept[hook.name] = tensor
        return tensor

    # Aliases (hook_k -> attn.k.hook_out) resolve to one hook.name: store under that, read back
    # under the name asked for.
    with torch.enable_grad(), model.hooks(fwd_hooks=[*fwd_hooks, *((n, keep) for n in names)]):
        logits = model(ids)
        value = metric(logits)
        order = list(kept)
        grads = torch.autograd.grad(value, [kept[n] for n in order], allow_unused=True)
    by_hook = {
        n: (kept[n].detach().float(), torch.zeros_like(kept[n]).float() if g is None else g.float())
        for n, g in zip(order, grads)
    }
    resolved = {name: hook_dict[name].name for name in names}
    return Gradients(
        metric=float(value.detach()),
        logits=logits.detach(),
        activations={name: by_hook[resolved[name]][0] for name in names},
        grads={name: by_hook[resolved[name]][1] for name in names},
    )
