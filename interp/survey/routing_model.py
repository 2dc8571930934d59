"""What a survey of recorded routing needs to know of the model, from its config.json alone
(no weights): its layers, which of them are MoE, its routed experts and top-k, its vocabulary.

Which layers route, as transformers 5.23 builds each family:
  deepseek_v3, kimi_k2, ...   layer i >= first_k_dense_replace and i % moe_layer_freq == 0
  qwen2_moe, qwen3_moe        i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0
  nemotron_h                  layers_block_type[i] == "moe"
  deepseek_v4                 mlp_layer_types[i] in ("moe", "hash_moe")
  otherwise                   every layer (Mixtral, OLMoE, GPT-OSS, Granite-MoE, ...)
Checked against the routers found in the loaded zoo models (tests/test_survey_routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError
from interp.models.config import read_config
from interp.validate import config_fields, json_file


@dataclass(frozen=True)
class RoutingModel:
    name: str
    n_layers: int
    moe_layers: list[int]
    n_experts: int
    top_k: int
    d_vocab: int
    directory: Path | None  # where a tokenizer may sit beside the config

    def facts(self) -> dict:
        """What `ExpertStats` reads, and what a survey's meta keeps as its cfg."""
        return {"n_layers": self.n_layers, "n_heads": 0, "n_key_value_heads": 0, "d_model": 0,
                "d_head": 0, "d_vocab": self.d_vocab, "n_ctx": 0, "moe_layers": self.moe_layers,
                "n_experts": self.n_experts, "top_k": self.top_k}  # fmt: skip


def routing_model(model: str | Path) -> RoutingModel:
    """A zoo name, a model directory, or a config.json path; one line when it is none."""
    from interp.models.zoo import ZOO

    path = Path(model)
    if str(model) in ZOO:
        directory = ZOO[str(model)].path()
        config = read_config(directory)
    elif path.is_dir():
        directory, config = path, read_config(path)
    elif path.is_file():
        directory = path.parent
        config = json_file(path)
        if not isinstance(config, dict):
            raise InterpError(f"{path} is not a JSON object")
        config = config_fields(config, path)
    else:
        raise InterpError(f"unknown model {str(model)!r}: give a zoo name (interp models) or a "
                          "config.json path")  # fmt: skip
    return _from_config(config.get("text_config") or config, str(model), directory)


def _from_config(config: dict, name: str, directory: Path) -> RoutingModel:
    def first(*keys, default=None):
        return next((config[k] for k in keys if config.get(k) is not None), default)

    n_layers = first("num_hidden_layers", "n_layers")
    if n_layers is None and isinstance(config.get("layers_block_type"), list):  # Nemotron-H
        n_layers = len(config["layers_block_type"])
    experts = first("n_routed_experts", "num_experts", "num_local_experts", default=0)
    top_k = first("num_experts_per_tok", "num_experts_per_token", default=0)
    vocab = first("vocab_size", "d_vocab")
    for key, value in {"num_hidden_layers": n_layers, "vocab_size": vocab}.items():
        if not isinstance(value, int) or value < 1:
            raise InterpError(f"the config of {name} has no {key}")
    if not (isinstance(experts, int) and isinstance(top_k, int) and 0 < top_k <= experts):
        raise InterpError(f"{name} has no routed experts (its config names no experts and "
                          "top-k): recorded routing needs a MoE model")  # fmt: skip
    layers = _moe_layers(config, n_layers)
    if not layers:
        raise InterpError(f"{name}'s config routes no layer")
    return RoutingModel(name, n_layers, layers, experts, top_k, vocab, directory)


def _moe_layers(config: dict, n: int) -> list[int]:
    kind = config.get("model_type")
    if kind == "nemotron_h":
        return [i for i, t in enumerate(config.get("layers_block_type", [])[:n]) if t == "moe"]
    if kind == "deepseek_v4" and config.get("mlp_layer_types"):
        types = config["mlp_layer_types"][:n]
        return [i for i, t in enumerate(types) if t in ("moe", "hash_moe")]
    if "first_k_dense_replace" in config or "moe_layer_freq" in config:
        dense = int(config.get("first_k_dense_replace") or 0)
        every = int(config.get("moe_layer_freq") or 1)
        return [i for i in range(n) if i >= dense and i % every == 0]
    if "decoder_sparse_step" in config or "mlp_only_layers" in config:
        step = int(config.get("decoder_sparse_step") or 1)
        dense = set(config.get("mlp_only_layers") or [])
        return [i for i in range(n) if i not in dense and (i + 1) % step == 0]
    return list(range(n))


def tokenizer_of(model: RoutingModel):
    """The tokenizer beside the config (zoo models ship one), else None: top tokens then
    show ids."""
    if model.directory is None or not (model.directory / "tokenizer.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model.directory))
