"""The shipped tiny-moe checkpoint: loads offline, has the promised shape, learned something,
and routes code and prose through different experts."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from interp.analysis import experts as ex
from interp.corpus import DOMAINS, held_out_windows
from interp.trace.frames import routing_rows

WEIGHTS = Path(__file__).resolve().parents[1] / "interp" / "models" / "weights" / "tiny-moe"


@pytest.fixture(scope="module")
def model():
    m = AutoModelForCausalLM.from_pretrained(
        WEIGHTS, local_files_only=True, attn_implementation="eager", dtype=torch.float32
    )
    return m.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(WEIGHTS, local_files_only=True)


@pytest.fixture(scope="module")
def log() -> dict:
    return json.loads((WEIGHTS / "training_log.json").read_text())


def test_checkpoint_is_small_and_complete():
    names = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert names <= {p.name for p in WEIGHTS.iterdir()}
    assert sum(p.stat().st_size for p in WEIGHTS.iterdir()) <= 15 * 2**20


def test_architecture(model, tokenizer):
    cfg = model.config
    assert type(model).__name__ == "OlmoeForCausalLM"
    assert cfg.num_hidden_layers >= 4 and cfg.num_experts >= 16 and cfg.num_experts_per_tok >= 2
    assert next(model.parameters()).dtype == torch.float32
    assert len(tokenizer) == cfg.vocab_size


def test_recorded_validation_beats_unigram(log):
    for domain in DOMAINS:
        # "Clearly": at least a quarter below the unigram cross-entropy.
        assert log["val_loss"][domain] < 0.75 * log["unigram"][domain], domain


def windows(tokenizer, log, domain: str) -> torch.Tensor:
    return held_out_windows(tokenizer, domain, log["eval"]["seq_len"], log["eval"]["max_windows"])


@pytest.mark.slow
def test_fresh_forward_reproduces_logged_validation_loss(model, tokenizer, log):
    # The last curve point is the final model on the first `eval_windows` windows: a quarter
    # of the cost of the headline `val_loss`, measured on the same recipe.
    last = log["curve"][-1]
    assert last["step"] == log["steps"]
    for domain in DOMAINS:
        x = windows(tokenizer, log, domain)
        assert len(x) == log["val_windows"][domain]
        x = x[: log["eval_windows"]]
        logits = torch.cat([model(input_ids=c).logits for c in x.split(8)])
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)
        )
        assert loss.item() == pytest.approx(last["val"][domain], abs=2e-3), domain


def routing(model, tokenizer, x: torch.Tensor, label: str) -> pd.DataFrame:
    """Routing frame of each window (prompt '<label>/<i>') from the HF router logits."""
    out = model(input_ids=x, output_router_logits=True)
    logits = torch.stack(out.router_logits).view(len(out.router_logits), *x.shape, -1)
    return pd.concat(
        routing_rows(
            logits[:, i],
            model.config.num_experts_per_tok,
            tokenizer.convert_ids_to_tokens(x[i]),
            prompt=f"{label}/{i}",
        )
        for i in range(len(x))
    )


@pytest.mark.slow
def test_code_and_prose_route_differently(model, tokenizer, log):
    frame = pd.concat(
        routing(model, tokenizer, windows(tokenizer, log, d)[:8], d) for d in ("code", "prose")
    )
    between = {p: p.split("/")[0] for p in frame["prompt"].unique()}
    # Control: the two halves of the code windows, which differ only by sampling noise.
    within = {f"code/{i}": "code-a" if i < 4 else "code-b" for i in range(8)}
    across = ex.domain_divergence(frame, between).set_index("layer")["js"]
    noise = ex.domain_divergence(frame, within).set_index("layer")["js"]
    # Some layer separates the domains: a JS of over 0.1 bits, over 4x the split-half noise.
    assert ((across > 0.1) & (across > 4 * noise)).any(), (across, noise)


@pytest.mark.slow
def test_bridge_matches_hf_and_expert_hooks_reroute(tokenizer, log):
    from transformer_lens.model_bridge import TransformerBridge

    hf = AutoModelForCausalLM.from_pretrained(
        WEIGHTS, local_files_only=True, attn_implementation="eager", dtype=torch.float32
    ).eval()
    x = windows(tokenizer, log, "code")[:2, :64]
    expected = hf(input_ids=x).logits
    bridge = TransformerBridge.boot_transformers("tiny-moe", hf_model=hf, tokenizer=tokenizer)
    before = bridge(x)
    assert torch.equal(before, expected)  # both eager attention: bit-identical

    seen = {}

    def grab(indices, hook):
        seen[hook.name] = indices.view(*x.shape, -1).clone()

    name = "blocks.1.mlp.gate.hook_expert_indices"
    bridge.run_with_hooks(x, fwd_hooks=[(name, grab)])
    natural = seen[name]
    expert = int(natural[0, 10, 0])  # the top choice at one token
    forbid = ex.expert_hooks([1], expert, "forbid", positions=[10, -1])
    after = bridge.run_with_hooks(x, fwd_hooks=forbid + [(name, grab)])
    routed = seen[name]
    assert not (routed[:, [10, -1]] == expert).any()
    untouched = [p for p in range(x.shape[1]) if p not in (10, x.shape[1] - 1)]
    assert torch.equal(routed[:, untouched], natural[:, untouched])
    effect = ex.intervention_effect(before, after)
    assert effect.loc[effect["pos"] < 10, "kl"].abs().max() < 1e-6  # causal: earlier untouched
    # Row 0 had `expert` on top at pos 10, so losing it must move the prediction there.
    assert effect.query("prompt == 0 and pos == 10")["kl"].item() > 0

    force = ex.expert_hooks([1], (expert + 1) % hf.config.num_experts, "force")
    bridge.run_with_hooks(x, fwd_hooks=force + [(name, grab)])
    assert (seen[name] == (expert + 1) % hf.config.num_experts).any(-1).all()
