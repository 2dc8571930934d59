"""Every row of issue #25's speed targets in one table, measured side by side in one run.

    .venv/bin/python benchmarks/speed.py [--quick] [--repeats 5] [--device cpu] [--dtype float32]
    taskset -c 0 .venv/bin/python benchmarks/speed.py          # the README's figures

Each ratio compares methods timed in the same rounds (every round runs each once, in turn, so
load from other processes hits them alike; median of `--repeats`), in CPU time on the CPU
(the loads and the CLI run: wall time), wall time on a GPU. Baselines: transformers'
own model from the same checkpoint with its default attention (SDPA), and with eager (the
only kind that yields patterns); `generate` with its KV cache. nnsight (saving 4 tensors per
layer) and TransformerLens's run_with_cache run in the same rounds where importable.
`--quick`: 64 tokens, 8 generated, small OLMoE shape, one repeat: a seconds-long smoke run.
benchmarks/gpu.py prints the same table on a GPU in bfloat16.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from capture import nnsight_run, twin  # noqa: E402

import interp  # noqa: E402
from interp.models import gguf_checkpoint  # noqa: E402
from interp.models.zoo import ZOO, smollm2_gguf  # noqa: E402

torch.set_grad_enabled(False)

# allenai/OLMoE-1B-7B-0924's config.json: 6.9B parameters, 1.3B active per token.
OLMOE_1B_7B = dict(
    num_hidden_layers=16, hidden_size=2048, intermediate_size=1024, num_attention_heads=16,
    num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, vocab_size=50304,
    max_position_embeddings=4096, rms_norm_eps=1e-5, norm_topk_prob=False, clip_qkv=None,
    tie_word_embeddings=False, rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
)  # fmt: skip
# A CPU holds 2 of its layers at full width (4 GB in float32); --quick shrinks the width too.
CPU_SHAPE = dict(num_hidden_layers=2)
QUICK_SHAPE = dict(num_hidden_layers=2, hidden_size=256, intermediate_size=128,
                   num_attention_heads=4, num_key_value_heads=4)  # fmt: skip
PROMPT = "The capital of France is"
IMPORTS = "import time, torch, interp, transformers, transformer_lens.model_bridge"


class Bench:
    def __init__(self, device: torch.device, dtype: torch.dtype, repeats: int, quick: bool):
        self.device, self.dtype, self.repeats, self.quick = device, dtype, repeats, quick
        self.rows: list[tuple[str, str, str, str]] = []

    def medians(self, runs: dict) -> dict[str, float]:
        """Median seconds per method; each round runs every method once, in turn."""
        for fn in runs.values():
            fn()  # warm-up
        times = {name: [] for name in runs}
        for _ in range(self.repeats):
            for name, fn in runs.items():
                times[name].append(self.seconds(fn))
        return {name: statistics.median(t) for name, t in times.items()}

    def seconds(self, fn) -> float:
        """On the CPU, the process's CPU time: on a shared machine wall time also counts the
        waits for a core, which hit one method and not the next; on a GPU, wall time."""
        clock = time.perf_counter if self.device.type == "cuda" else time.process_time
        self.sync()
        start = clock()
        fn()
        self.sync()
        return clock() - start

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def row(self, work: str, now: str, target: str, measured: str) -> None:
        self.rows.append((work, now, target, measured))
        print(f"  {work}: {measured}", flush=True)

    def hf(self, path, attn: str = "sdpa"):
        """transformers' own model, outside any bridge, as a user would run it."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            path, attn_implementation=attn, dtype=self.dtype, device_map={"": self.device}
        ).eval()

    def load(self, name: str):
        return interp.load(name, device=self.device, dtype=self.dtype)


def x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def capture_rows(b: Bench, n: int) -> None:
    path = gguf_checkpoint(smollm2_gguf())
    sdpa, eager, model = b.hf(path), b.hf(path, "eager"), b.load("smollm2-135m")
    ids = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
    on = ids.to(b.device)
    runs = {
        "forward, default (SDPA)": lambda: sdpa(on),
        "forward, eager": lambda: eager(on),
        "TL bridge forward, no hooks": lambda: model(on),
        "interp trace, full": lambda: interp.trace(model, ids),
        "interp trace, residual only": lambda: interp.trace(model, ids, capture=["residual"]),
        "interp trace, memory only": lambda: interp.trace(model, ids, capture=()),
        "TL run_with_cache": lambda: model.run_with_cache(on),
    }
    if importlib.util.find_spec("nnsight"):
        from nnsight import NNsight

        wrapped = nnsight_run(NNsight(twin(eager)))
        runs["nnsight, 4 tensors x 30 layers"] = lambda: wrapped(on)
    t = b.medians(runs)
    sd, ea = t["forward, default (SDPA)"], t["forward, eager"]
    print(f"smollm2-135m, {n} tokens (seconds, / SDPA forward, / eager forward):")
    for name, s in t.items():
        print(f"  {name:34s} {s:7.3f} {s / sd:6.2f}x {s / ea:6.2f}x")
    full = t["interp trace, full"]
    nn = t.get("nnsight, 4 tensors x 30 layers")
    vs_nn = f", nnsight {x(nn / sd)}" if nn else ", nnsight not installed"
    b.row(f"full trace, {n} tokens, smollm2", "1.23-1.64x forward", "<= 1.10x, below nnsight",
          f"{x(full / sd)} SDPA fwd, {x(full / ea)} eager fwd{vs_nn}, "
          f"run_with_cache {x(t['TL run_with_cache'] / sd)}")  # fmt: skip
    b.row("capture of residual / memory only (no patterns)", "eager whatever is asked",
          "<= 1.05x SDPA forward",
          f"residual {x(t['interp trace, residual only'] / sd)}, memory "
          f"{x(t['interp trace, memory only'] / sd)} (TL bridge alone "
          f"{x(t['TL bridge forward, no hooks'] / sd)}, eager {x(ea / sd)})")  # fmt: skip
    generation_rows(b, sdpa, model, "residual")


def generation_rows(b: Bench, plain, model, only: str) -> None:
    top = min(4000, model.cfg.d_vocab)
    prompt = torch.randint(3, top, (1, 16), generator=torch.Generator().manual_seed(1))
    name = model.interp_name
    for steps in (8,) if b.quick else (32, 256):
        steps = min(steps, model.cfg.n_ctx - prompt.shape[1])  # tiny-deepseek: 256 positions
        t = b.medians({
            "generate": lambda s=steps: plain.generate(
                prompt.to(b.device), max_new_tokens=s, min_new_tokens=s, do_sample=False,
                pad_token_id=0),
            "default": lambda s=steps: interp.trace(model, prompt, max_new_tokens=s),
            only: lambda s=steps: interp.trace(model, prompt, max_new_tokens=s, capture=[only]),
        })  # fmt: skip
        speed = {k: t["generate"] / v for k, v in t.items()}
        rate = f"generate {steps / t['generate']:.1f} tok/s"
        if only == "residual":
            b.row(f"traced generation, {steps} new tokens, default capture, {name}",
                  "0.31-0.72x generate", ">= 0.9x", f"{x(speed['default'])} ({rate})")  # fmt: skip
        b.row(f"traced generation, {steps} new tokens, {only} only, {name}", "-", ">= 0.97x",
              f"{x(speed[only])} ({rate})")  # fmt: skip


def routing_rows(b: Bench, n: int) -> None:
    from transformers import AutoModelForCausalLM, OlmoeConfig

    from interp.models.hf import bridge_hf_model

    model = b.load("tiny-deepseek")
    plain = b.hf(ZOO["tiny-deepseek"].path())
    shape = QUICK_SHAPE if b.quick else CPU_SHAPE if b.device.type == "cpu" else {}
    config = OlmoeConfig(**{**OLMOE_1B_7B, **shape})
    config.architectures = ["OlmoeForCausalLM"]
    torch.manual_seed(0)
    with b.device:  # weights are created where they run: no CPU copy of 14 GB
        olmoe = AutoModelForCausalLM.from_config(config, dtype=b.dtype).eval()
    layers = config.num_hidden_layers
    shaped = f"olmoe-1b-7b-shaped, {layers} layers"
    bridged = bridge_hf_model(twin(olmoe), shaped)  # eager, as interp.load builds it
    for name, hf, bridge in [("tiny-deepseek", plain, model), (shaped, olmoe, bridged)]:
        vocab, length = hf.config.vocab_size, min(n, bridge.cfg.n_ctx)
        ids = torch.randint(3, vocab, (1, length), generator=torch.Generator().manual_seed(2))
        on = ids.to(b.device)
        t = b.medians({
            "forward": lambda h=hf, i=on: h(i),
            "routing": lambda m=bridge, i=ids: interp.trace(m, i, capture=["routing"]),
        })  # fmt: skip
        b.row(f"routing only, {length} tokens, {name} ({b.dtype_name})", "-", "<= 1.05x forward",
              x(t["routing"] / t["forward"]))  # fmt: skip
    generation_rows(b, plain, model, "routing")


def _child(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return float(out.stdout.split()[-1])


def load_rows(b: Bench) -> None:
    b.load("smollm2-135m")
    second = b.medians({"load": lambda: b.load("smollm2-135m")})["load"]
    b.row("second load in a process", "2.5 s", "<= 0.5 s", f"{second:.2f} s")
    # Fresh processes, imports done before the clock starts (every approach pays them alike);
    # CPU time, and the CLI's wall time beside it.
    head = f"{IMPORTS}; t = time.process_time()"
    checks = (
        "from interp.models import gguf_checkpoint; from interp.models.zoo import smollm2_gguf; "
    )
    tail = "; print(time.process_time() - t)"
    runs = 1 if b.quick else 3
    first = statistics.median(_child(f"{head}; interp.load(){tail}") for _ in range(runs))
    cached = statistics.median(
        _child(f"{checks}{head}; gguf_checkpoint(smollm2_gguf()){tail}") for _ in range(runs)
    )
    b.row("first load, warm disk cache", "3.6-4.2 s", "<= 1.5 s",
          f"{first:.2f} s (cache checks {cached:.3f} s; imports excluded)")  # fmt: skip
    start, cpu = time.perf_counter(), _children_cpu()
    for _ in range(runs):
        subprocess.run([sys.executable, "-m", "interp.cli", "generate", PROMPT, "-n", "3"],
                       check=True, capture_output=True)  # fmt: skip
    wall, cpu = (time.perf_counter() - start) / runs, (_children_cpu() - cpu) / runs
    imports = statistics.median(
        _child(f"{IMPORTS}; print(time.process_time())") for _ in range(runs)
    )
    b.row('`interp generate "..." -n 3`, end to end', "-", "<= 4 s",
          f"{cpu:.2f} s CPU, {wall:.2f} s wall (imports alone {imports:.2f} s CPU)")  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def survey_rows(b: Bench) -> None:
    if b.device.type != "cpu":
        b.row("survey, tiny-moe and smollm2", "0.66x / 0.86x", ">= 0.85x both", "CPU only")
        return
    from survey import run as survey_run

    args = argparse.Namespace(models="tiny-moe,smollm2-135m", seq_len=256, batch_size=8,
                              quick=b.quick)  # fmt: skip
    rows, _ = survey_run(args, max(1, min(b.repeats, 3)), speed=True)
    found = ", ".join(f"{name} {x(survey / plain)}" for name, _, plain, survey in rows)
    b.row("survey vs the bridge's HF forward (benchmarks/survey.py)", "0.66x / 0.86x",
          ">= 0.85x both", found)  # fmt: skip


def main(device: str = "cpu", dtype: str = "float32") -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=device)
    parser.add_argument("--dtype", default=dtype, choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args()
    from interp.models.devices import parse_device

    torch.set_num_threads(args.threads)
    b = Bench(parse_device(args.device), getattr(torch, args.dtype), args.repeats, args.quick)
    b.repeats = 1 if args.quick else args.repeats
    b.dtype_name = args.dtype
    n = 64 if args.quick else 512
    where = torch.cuda.get_device_name(b.device) if b.device.type == "cuda" else "CPU"
    print(f"{where}, {args.dtype}, median of {b.repeats}, {args.threads} thread(s)")
    capture_rows(b, n)
    routing_rows(b, n)
    load_rows(b)
    survey_rows(b)
    print("\n| work | issue's now | target | measured |\n|---|---|---|---|")
    for row in b.rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    from interp.scripts import run_script

    run_script(main)
