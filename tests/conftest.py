"""Shared fixtures: each real model is loaded once per test session."""

from __future__ import annotations

import os
import shutil

# One thread per torch process. Two OpenMP threads on a 2-core machine that other jobs share
# wait for each other at every op: under a load of 5 a tiny-moe survey of 2,762 tokens took 50 s
# with two threads and 0.35 s with one. Set before torch starts; subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from interp.models.zoo import WEIGHTS

torch.set_grad_enabled(False)
torch.set_num_threads(1)

# Every timeout and deadline in the tests only stops a hang; it never judges speed (that belongs
# in benchmarks/). On a loaded 2-core machine the suite ran 6x slower than idle and a 300 s
# subprocess limit failed a healthy test, so the limit sits far above the slowest run seen under
# load. Tests import it: `from conftest import HANG_S`.
HANG_S = 2400


@pytest.fixture(scope="session")
def smollm():
    import interp

    return interp.load("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_reference():
    """transformers' own GGUF reader: an implementation independent of ours."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from interp.models.zoo import smollm2_gguf

    path = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


@pytest.fixture(scope="session")
def random_olmoe(tmp_path_factory):
    """A random 2-layer OLMoE without a tokenizer: experts, and grouped-query attention (4 query
    heads on 2 KV heads) in a model that loads in a second."""
    from transformers import AutoModelForCausalLM, OlmoeConfig

    import interp

    config = OlmoeConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        num_experts=8, num_experts_per_tok=2,
    )  # fmt: skip
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("olmoe")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return interp.load(str(path))


def random_llama(tmp_path_factory, n_layers: int):
    """The directory of a random tiny Llama without a tokenizer: grouped-query attention (4
    query heads on 2 KV heads), rotary positions, seed 2."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=n_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def nemotron_h_config(**overrides):
    """A tiny Nemotron-H: Mamba2, MoE (sigmoid + bias + groups, a shared expert), attention
    (no positional encoding), Mamba2, dense MLP."""
    from transformers import NemotronHConfig

    values = dict(
        vocab_size=101, hidden_size=32, num_hidden_layers=5, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=48, max_position_embeddings=64,
        layers_block_type=["mamba", "moe", "attention", "mamba", "mlp"], mamba_num_heads=4,
        mamba_head_dim=8, ssm_state_size=8, n_groups=2, conv_kernel=4, chunk_size=8,
        n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
        moe_intermediate_size=16, moe_shared_expert_intermediate_size=16,
    )  # fmt: skip
    return NemotronHConfig(**{**values, **overrides})


def deepseek_v4_config(**overrides):
    """A tiny DeepSeek-V4: 4 residual streams (mHC, Sinkhorn mixing); sliding, compressed-sparse
    (with its indexer) and heavily-compressed attention; one hash-routed layer then sigmoid
    top-k layers, each with a shared expert."""
    from transformers import DeepseekV4Config

    values = dict(
        vocab_size=2048, hidden_size=32, moe_intermediate_size=16, num_hidden_layers=4,
        num_attention_heads=4, head_dim=16, q_lora_rank=16, n_routed_experts=8,
        num_experts_per_tok=2, scoring_func="sigmoid", hc_mult=4, sliding_window=4,
        layer_types=["sliding_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention", "compressed_sparse_attention"],
        mlp_layer_types=["hash_moe", "moe", "moe", "moe"],
        compress_rates={"compressed_sparse_attention": 2, "heavily_compressed_attention": 4},
        o_groups=2, o_lora_rank=8, index_n_heads=2, index_head_dim=8, index_topk=2,
        max_position_embeddings=64, pad_token_id=2, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return DeepseekV4Config(**{**values, **overrides})


@pytest.fixture(scope="session")
def tiny_deepseek_v4(tmp_path_factory):
    """A random tiny DeepSeek-V4 (builds and loads in seconds) with tiny-moe's tokenizer, so
    the CLI can run on it (its directory: .name_or_path); its hash table and router biases are
    random so that they take part."""
    from transformers import AutoModelForCausalLM

    import interp

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(deepseek_v4_config())
    with torch.no_grad():
        for module in hf.modules():
            if hasattr(module, "tid2eid"):  # top_k distinct experts per token id
                table = torch.rand(module.tid2eid.shape[0], module.num_experts).argsort(-1)
                module.tid2eid.copy_(table[:, : module.top_k])
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("deepseek_v4")
    hf.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # tiny-moe's 2048-token BPE
        shutil.copy(WEIGHTS / "tiny-moe" / name, path / name)
    return interp.load(str(path))


@pytest.fixture(scope="session")
def tiny_nemotron_h(tmp_path_factory):
    """A random tiny Nemotron-H (builds and loads in about a second)."""
    from transformers import AutoModelForCausalLM

    import interp

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(nemotron_h_config())
    with torch.no_grad():
        for module in hf.modules():  # a bias that takes part in the choice
            if hasattr(module, "e_score_correction_bias"):
                module.e_score_correction_bias.normal_(0, 0.3)
    path = tmp_path_factory.mktemp("nemotron_h")
    hf.save_pretrained(path)
    return interp.load(str(path))
