"""Token ids as the model's own tokenizer makes them: `interp.trace` of a text prompt holds
exactly `tokenizer(text)["input_ids"]` (BOS where that tokenizer adds one), for the zoo models
and tiny random checkpoints of several families, each with a tokenizer built offline."""

from __future__ import annotations

import pytest
import torch

import interp

TEXTS = ["The cat sat", "a", "  two  spaces", "café, then more"]
CHARS = "abcdefghijklmnopqrstuvwxyzTABCDEFGé ▁Ġ.,"


def _tokenizer(family: str):
    """A character-level BPE of the family's tokenizer class with its special tokens: Llama
    and Gemma add BOS, Phi-3 (a Llama tokenizer configured add_bos_token=False), Qwen3 and
    GPT-2 add none (as their released tokenizer_config.json files say)."""
    import transformers as tf

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<bos>", "<eos>", "<|endoftext|>"]
    vocab = {c: i for i, c in enumerate(specials + list(CHARS))}
    make = {
        "llama": lambda: tf.LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True),
        "gemma3": lambda: tf.GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True),
        "phi3": lambda: tf.LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=False),
        "qwen3": lambda: tf.Qwen2Tokenizer(vocab=vocab, merges=[]),
        "gpt2": lambda: tf.GPT2Tokenizer(vocab=vocab, merges=[]),
    }
    return make[family]()


def _config(family: str):
    import transformers as tf

    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=64)  # fmt: skip
    return {
        "llama": lambda: tf.LlamaConfig(**shape),
        "gemma3": lambda: tf.Gemma3TextConfig(**shape, head_dim=8, sliding_window=8),
        "phi3": lambda: tf.Phi3Config(**shape, pad_token_id=3),
        "qwen3": lambda: tf.Qwen3Config(**shape, head_dim=8),
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64
        ),
    }[family]()


FAMILIES = ["llama", "gemma3", "phi3", "qwen3", "gpt2"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    AutoModelForCausalLM.from_config(_config(request.param)).save_pretrained(path)
    _tokenizer(request.param).save_pretrained(path)
    return request.param, interp.load(str(path))


def _assert_ids_are_the_tokenizers(model):
    tokenizer = model.tokenizer
    for text in TEXTS:
        own = tokenizer(text)["input_ids"]
        trace = interp.trace(model, text, capture=())
        assert trace.records[0].ids.tolist() == own, text
        bos = tokenizer.bos_token_id
        plain = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert trace.meta["bos_added"] == [bos is not None and own == [bos, *plain]], text
        # prepend_bos overrides: BOS first, or none, whatever the tokenizer does.
        if bos is not None:
            forced = interp.trace(model, text, capture=(), prepend_bos=True)
            assert forced.records[0].ids.tolist() == [bos, *plain]
        bare = interp.trace(model, text, capture=(), prepend_bos=False)
        assert bare.records[0].ids.tolist() == plain and bare.meta["bos_added"] == [False]


def test_family_ids_equal_the_tokenizers(family_model):
    family, model = family_model
    _assert_ids_are_the_tokenizers(model)
    added = interp.trace(model, TEXTS[0], capture=()).meta["bos_added"][0]
    assert added == (family in ("llama", "gemma3")), family  # the families' own defaults


@pytest.mark.parametrize("name", ["tiny-moe", "tiny-deepseek"])
def test_zoo_ids_equal_the_tokenizers(name):
    _assert_ids_are_the_tokenizers(interp.load(name))


@pytest.mark.slow
def test_smollm_ids_equal_the_tokenizers(smollm):
    _assert_ids_are_the_tokenizers(smollm)
