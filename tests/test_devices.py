"""Device and dtype: bad options are one line; bf16 against float32; frames stay float32 on
the CPU; GPU and two-GPU runs match one device (marked `gpu`, skipped without CUDA)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import HANG_S

import interp
from interp.analysis.attribution import direct_logit_attribution, final_norm, sum_tolerance
from interp.corpus import DOMAINS, documents, held_out_windows
from interp.errors import InterpError
from interp.models.devices import parse_dtype
from interp.trace.kv_cache import kv_cache_bytes

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


# --- bad input: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"device": "tpu:0"}, "unknown device 'tpu:0'"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"dtype": torch.int8}, "unknown dtype 'torch.int8'"),
        ({"n_devices": 0}, "n_devices must be a whole number >= 1"),
        ({"n_devices": torch.cuda.device_count() + 2}, "GPU(s)"),
        ({"device_map": {"model.layerz.0": "cpu", "": "cpu"}}, "did you mean model.layers.0"),
        ({"device_map": "everywhere"}, "unknown device_map 'everywhere'"),
    ],
)
def test_bad_options_are_one_line(options, message):
    with pytest.raises(InterpError) as err:
        interp.load("tiny-moe", **options)
    assert message in str(err.value) and "\n" not in str(err.value)


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:1", {"": 0}])
def test_cuda_without_cuda(device):
    options = {"device_map": device} if isinstance(device, dict) else {"device": device}
    with pytest.raises(InterpError, match="asked for CUDA, but this machine has none"):
        interp.load("attn-only-1l", **options)


def test_cli_bad_device_exits_2_with_one_line():
    for flags in (["--device", "gpu"], ["--dtype", "fp8"], ["--n-devices", "64"]):
        out = subprocess.run(
            [sys.executable, "-m", "interp.cli", "experts", "a b", *flags],
            capture_output=True, text=True, timeout=HANG_S,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("interp: error: ")


def test_dtype_auto_is_the_checkpoint_dtype_on_a_gpu_and_float32_on_the_cpu():
    assert parse_dtype("auto", "cuda", "bfloat16") is torch.bfloat16
    assert parse_dtype("auto", "cpu", "bfloat16") is torch.float32
    assert parse_dtype("auto", "cuda", None) is torch.float32
    assert parse_dtype("bf16", "cpu") is parse_dtype(torch.bfloat16, "cpu") is torch.bfloat16
    model = interp.load("tiny-moe", device="cpu")
    assert next(model.parameters()).dtype is torch.float32


def test_a_cpu_device_map_gives_the_same_logits():
    """The split path (accelerate's device_map) on one CPU: same model, same numbers."""
    plain = interp.load("tiny-moe")
    names = ["model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head"]
    layers = [f"model.layers.{i}" for i in range(plain.cfg.n_layers)]
    mapped = interp.load("tiny-moe", device_map=dict.fromkeys(names + layers, "cpu"))
    ids = torch.arange(1, 40)[None]
    torch.testing.assert_close(mapped(ids), plain(ids), rtol=0, atol=0)


# --- frames are float32 on the CPU whatever the model's dtype --------------------------------


@pytest.mark.parametrize("name", ["tiny-moe", "attn-only-2l"])
def test_bf16_trace_is_float32_on_the_cpu(name):
    model = interp.load(name, dtype="bfloat16")
    assert next(model.parameters()).dtype is torch.bfloat16
    trace = interp.trace(model, torch.arange(1, 30), max_new_tokens=3, query_positions="all")
    assert trace.facts.dtype == "bfloat16" and trace.meta["device"] == "cpu"
    for record in trace.records:
        for t in [record.logprob, record.entropy, record.query_logits, *record.tensors.values()]:
            assert t.device.type == "cpu"
            assert t.dtype in (torch.float32, torch.int64), t.dtype
    for frame_name in trace.FRAMES:
        frame = getattr(trace, frame_name)
        floats = frame.select_dtypes("floating")
        assert all(str(d) in ("float32", "float64") for d in floats.dtypes), frame_name
    # KV-cache bytes in the model's dtype: bf16 holds 2 bytes a value, as measured (in the
    # Hugging Face cache; the TL-native model keeps its own).
    kv = trace.kv_cache
    if name == "tiny-moe":
        assert (kv.bytes == kv.measured_bytes).all()
    assert (kv.bytes * 2 == kv.positions.map(lambda n: kv_cache_bytes(trace.facts, n, 4)[0])).all()


# --- bf16 against float32 --------------------------------------------------------------------


def _routing(model, windows):
    """Per window: the dense routing frame, and the experts the model itself picked per layer."""
    out = []
    for ids in windows:
        picked: dict[int, torch.Tensor] = {}

        def keep(layer, picked=picked):
            return lambda t, hook: picked.__setitem__(layer, t.sort(-1).values.cpu())

        hooks = [(f"blocks.{i}.mlp.hook_expert_indices", keep(i)) for i in range(4)]
        trace = interp.trace(model, ids, capture=("routing_dense",), fwd_hooks=hooks)
        out.append((trace.routing_dense, picked))
    return out


def test_tiny_moe_experts_bf16_vs_float32():
    """bf16 moves router logits by about one bf16 step; experts differ only where float32's
    k-th and (k+1)-th logits are closer than the bf16 error (near-ties)."""
    models = {dtype: interp.load("tiny-moe", dtype=dtype) for dtype in ("float32", "bfloat16")}
    tokenizer, k = models["float32"].tokenizer, 2
    windows = torch.cat([held_out_windows(tokenizer, d, 128, 2) for d in DOMAINS])
    runs = {dtype: _routing(model, windows) for dtype, model in models.items()}
    differ, total, margins = [], 0, []
    for (f32, _), (b16, picked) in zip(runs["float32"], runs["bfloat16"]):
        key = ["layer", "pos", "expert"]
        f32, b16 = f32.sort_values(key), b16.sort_values(key)
        logit32 = torch.tensor(f32.logit.to_numpy()).view(4, -1, 16)  # [layer pos expert]
        logit16 = torch.tensor(b16.logit.to_numpy()).view(4, -1, 16)
        sel32 = torch.tensor(f32.selected.to_numpy()).view(4, -1, 16)
        sel16 = torch.tensor(b16.selected.to_numpy()).view(4, -1, 16)
        # The frame's float32 router math picks what the bf16 model picked (where the model's
        # k-th and (k+1)-th logits are not exactly equal: BOS's all-zero logits tie).
        top16 = logit16.sort(-1, descending=True).values
        untied = top16[..., k - 1] > top16[..., k]  # [layer pos]
        for layer in range(4):
            frame_picks = sel16[layer].nonzero()[:, 1].view(-1, k)
            assert (frame_picks == picked[layer])[untied[layer]].all()
        top = logit32.sort(-1, descending=True).values
        margin = top[..., k - 1] - top[..., k]  # [layer pos]: float32's kth - (k+1)th logit
        error = (logit16 - logit32).abs().amax(-1)  # [layer pos]
        changed = (sel32 != sel16).any(-1)
        # A swap needs the two experts' logits to cross: margin <= the errors of both.
        assert (margin[changed] <= 2 * error[changed]).all()
        differ.append(changed.sum())
        margins.append((margin[changed], margin.flatten(), error.flatten()))
        total += changed.numel()
    rate = float(sum(differ)) / total
    at_swaps = torch.cat([m[0] for m in margins])
    everywhere, error = torch.cat([m[1] for m in margins]), torch.cat([m[2] for m in margins])
    print(f"\ntiny-moe bf16 vs float32: experts differ at {rate:.1%} of {total} token-layers; "
          f"float32 margin there median {at_swaps.median():.4f} (all: {everywhere.median():.4f}); "
          f"bf16 router-logit error median {error.median():.4f}")  # fmt: skip
    assert rate < 0.1
    if len(at_swaps):  # swaps happen at near-ties: their margins sit in the bottom decile
        assert at_swaps.median() < everywhere.quantile(0.1)


@pytest.fixture(scope="module")
def smollm_bf16():
    return interp.load("smollm2-135m", dtype="bfloat16")


@pytest.mark.slow
def test_smollm2_bf16_vs_float32(smollm, smollm_bf16):
    """~300 tokens of prose: top-1 agreement, and the lens and attribution identities."""
    ids = smollm.tokenizer(documents("prose", "validation")[0]).input_ids[:300]
    ids = torch.tensor(ids)
    logits = {"float32": smollm(ids[None])[0].float(), "bfloat16": smollm_bf16(ids[None])[0]}
    agree = (logits["float32"].argmax(-1) == logits["bfloat16"].float().argmax(-1)).float().mean()
    print(f"\nsmollm2-135m bf16 vs float32 over {len(ids)} tokens: top-1 agreement {agree:.1%}")
    assert agree >= 0.97
    for dtype, model in (("float32", smollm), ("bfloat16", smollm_bf16)):
        trace = interp.trace(model, ids, capture=("residual",))
        # Lens identity: the last layer's lens is the model's own output, in either dtype.
        lens_last = trace.readout(trace.tensor("resid")[-1])
        torch.testing.assert_close(lens_last, logits[dtype].float(), rtol=0, atol=0)
        # Attribution identity: the parts sum to the logit within the dtype's tolerance.
        norm, worst = final_norm(model), 0.0
        for pos in range(0, len(ids), 15):
            frame = direct_logit_attribution(trace, norm, pos=pos)
            real = float(lens_last[pos, frame.target_id.iloc[0]])
            worst = max(worst, abs(frame.logit.sum() - real) / max(1.0, abs(real)))
        print(f"{dtype}: attribution sum vs logit, worst relative gap {worst:.2e}")
        assert worst <= sum_tolerance(dtype)
    assert sum_tolerance("bfloat16") == pytest.approx(4 * 2**-7)


# --- on GPUs (skipped without CUDA) ----------------------------------------------------------


def _frames_close(a, b, atol):
    for name in ("residual", "attention_summary", "query_entropy", "routing", "tokens"):
        fa, fb = getattr(a, name), getattr(b, name)
        assert fa.shape == fb.shape, name
        for column in fa.select_dtypes("floating"):
            torch.testing.assert_close(
                torch.tensor(fa[column].to_numpy()), torch.tensor(fb[column].to_numpy()),
                atol=atol, rtol=1e-4, equal_nan=True,
            )  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_trace_matches_cpu():
    cpu = interp.load("tiny-moe", device="cpu")
    gpu = interp.load("tiny-moe", device="cuda", dtype="float32")
    ids = torch.arange(1, 60)
    a = interp.trace(cpu, ids, max_new_tokens=4, sampling=interp.Sampling(0.8, seed=3))
    b = interp.trace(gpu, ids, max_new_tokens=4, sampling=interp.Sampling(0.8, seed=3))
    assert b.meta["device"].startswith("cuda")
    # Same seed, same (float32) logits: the CPU generator draws the same tokens.
    assert a.records[0].ids.tolist() == b.records[0].ids.tolist()
    _frames_close(a, b, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_split_over_two_gpus_matches_one():
    one = interp.load("tiny-moe", device="cuda:0", dtype="float32")
    halves = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": 1, "lm_head": 1}
    halves |= {f"model.layers.{i}": int(i >= one.cfg.n_layers // 2) for i in range(4)}
    split = interp.load("tiny-moe", device_map=halves, dtype="float32")
    balanced = interp.load("tiny-moe", n_devices=2, dtype="float32")
    assert split.cfg.n_devices == 2
    ids = torch.arange(1, 80)
    logits = one(ids[None].cuda()).cpu()
    for model in (split, balanced):
        torch.testing.assert_close(model(ids[None].cuda()).cpu(), logits, atol=1e-5, rtol=1e-5)
    a = interp.trace(one, ids, max_new_tokens=3)
    b = interp.trace(split, ids, max_new_tokens=3)
    assert a.records[0].ids.tolist() == b.records[0].ids.tolist()
    _frames_close(a, b, atol=1e-5)
