"""What every command shares: the model options (--model and where it runs) and loading it,
and printing frames as an aligned table, CSV or JSON."""

from __future__ import annotations

import argparse

import pandas as pd

from interp.errors import InterpError
from interp.models.zoo import DEFAULT_MODEL


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")


def print_frame(frame: pd.DataFrame, fmt: str = "table", float_digits: int = 3) -> None:
    if fmt == "csv":
        print(frame.to_csv(index=False), end="")
    elif fmt == "json":
        print(frame.to_json(orient="records", indent=1))
    else:
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            print(frame.to_string(index=False, float_format=lambda x: f"{x:.{float_digits}f}"))


def add_model_options(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """--model and where it runs: --device, --dtype, --n-devices (`interp.load`'s options)."""
    parser.add_argument("--model", default=default)
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, mps, or auto (default: CUDA if any)"
    )
    parser.add_argument(
        "--dtype", default="auto",
        help="auto (default: the checkpoint's dtype on a GPU, float32 on the CPU), float32, "
        "bfloat16 or float16",
    )  # fmt: skip
    parser.add_argument(
        "--n-devices", type=int, default=None, metavar="N",
        help="split the model over N GPUs (accelerate places the layers)",
    )  # fmt: skip


def model_words(args: argparse.Namespace) -> list[str]:
    """The model options as command-line words, every default spelled out (to re-run)."""
    words = ["--model", args.model, "--device", args.device, "--dtype", args.dtype]
    return words + (["--n-devices", str(args.n_devices)] if args.n_devices else [])


def load_model(args: argparse.Namespace):
    """`interp.load` with the model options parsed by `add_model_options`."""
    import interp

    return interp.load(args.model, device=args.device, dtype=args.dtype, n_devices=args.n_devices)


def load_text_model(args: argparse.Namespace):
    """`load_model(args)`, refusing a token-only model (the command was given text)."""
    model = load_model(args)
    if model.tokenizer is None:
        raise InterpError(f"{args.model} has no tokenizer: it takes token ids, not text")
    return model
