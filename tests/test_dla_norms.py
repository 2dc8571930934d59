"""Direct logit attribution under every norm family, on tiny random checkpoints whose norm
weights and biases are drawn at random (so 1 + w differs from w and a bias is not zero): the
components sum to transformers' own logit, which the model computes independently of interp.
Families not covered: norms other than RMSNorm / LayerNorm (e.g. OLMo's non-parametric
LayerNorm reads as kind "LN" without weight, untested), and logit soft-capping (Gemma 2's
default), which is not linear: DLA explains the logit before the cap."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.analysis.attribution import direct_logit_attribution, final_norm

SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip


def _config(family: str):
    import transformers as tf

    return {
        # RMSNorm scaling by w
        "llama": lambda: tf.LlamaConfig(**SHAPE),
        "qwen3": lambda: tf.Qwen3Config(**SHAPE, head_dim=8),
        # RMSNorm scaling by 1 + w, post-attention and post-MLP norms, sliding layers
        "gemma3": lambda: tf.Gemma3TextConfig(
            **SHAPE, head_dim=8, sliding_window=4, final_logit_softcapping=None
        ),  # fmt: skip
        "gemma2": lambda: tf.Gemma2Config(
            **SHAPE, head_dim=8, sliding_window=4, final_logit_softcapping=None
        ),  # fmt: skip
        # RMSNorm by w, post-block norms only (no pre-norms)
        "olmo2": lambda: tf.Olmo2Config(**SHAPE),
        # LayerNorm with its own bias, and attention / MLP biases
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64
        ),  # fmt: skip
    }[family]()


FAMILIES = ["llama", "qwen3", "gemma3", "gemma2", "olmo2", "gpt2"]
IDS = torch.tensor([3, 17, 5, 40, 22, 9, 31])


def _random_norms(family: str, path):
    """A tiny checkpoint of the family with random norm weights and biases, and interp's load."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(_config(family)).eval()
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "norm" in name or ".ln_" in name or name.endswith("ln_f.weight"):
                p.copy_(torch.randn_like(p) * 0.5 + (0.0 if name.endswith("bias") else 0.3))
    reference.save_pretrained(path)
    return reference, interp.load(str(path))


@pytest.mark.parametrize("family", FAMILIES)
def test_dla_sums_to_transformers_logit(family, tmp_path):
    reference, model = _random_norms(family, tmp_path)
    with torch.no_grad():
        expected = reference(IDS[None]).logits[0, -1].double()
    trace = interp.trace(model, IDS, capture=("residual",))
    # The lens and the journey read the stream through the model's own final norm
    # (trace.readout): after the last layer, that is transformers' logit, for every family.
    readout = trace.readout(trace.tensor("resid")[-1, -1]).double()
    torch.testing.assert_close(readout, expected, atol=1e-5, rtol=1e-5)
    frame = direct_logit_attribution(trace, final_norm(model))
    target = int(frame["target_id"].iloc[0])
    assert target == int(expected.argmax())
    gap = abs(frame["logit"].sum() - float(expected[target]))
    print(f"{family}: max |sum - logit| = {gap:.2e} (logit {float(expected[target]):.3f})")
    assert gap < 1e-4 * max(1.0, abs(float(expected[target])))
    # The attention bias row holds only real biases: none in these families but GPT-2's.
    if family != "gpt2":
        bias = frame.loc[frame["kind"] == "bias", "logit"].iloc[0]
        assert abs(bias) < 1e-4, (family, bias)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_copy_scores_fold_the_scale_each_norm_applies(family, tmp_path):
    """The induction probe's copy scores fold each RMSNorm's scale into W_V and W_U: the scale
    transformers' module applies, w for Llama and 1 + w for Gemma."""
    from interp.runs.induction import _norm_weights

    reference, model = _random_norms(family, tmp_path)
    ln1, final = _norm_weights(model)
    x = torch.randn(5, SHAPE["hidden_size"])
    normed = x * x.pow(2).mean(-1, keepdim=True).add(reference.config.rms_norm_eps).rsqrt()
    with torch.no_grad():
        for layer, block in enumerate(reference.model.layers):
            torch.testing.assert_close(normed * ln1[layer], block.input_layernorm(x))
        torch.testing.assert_close(normed * final, reference.model.norm(x))
