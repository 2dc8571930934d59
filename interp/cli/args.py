"""Argument parsing for `interp`: one error line per mistake, checked values, prompts from files.

Every option value goes through `interp.validate`, the checks the library applies too.
"""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path

from interp import validate
from interp.errors import InterpError

MODEL_HELP = (
    "an embedded model (see `interp models`), a checkpoint directory, a .gguf file or a "
    "Hugging Face hub name (default: %(default)s)"
)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one `InterpError` line naming the command, with a
    guess for a misspelled option or command; options are never prefix-matched."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.commands.get(getattr(namespace, "command", None), self)
            command.error(
                f"unrecognized arguments: {' '.join(extras)}{_guess_option(command, extras)}"
            )
        return namespace

    def error(self, message: str):
        choices = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)", message)
        if choices:
            names = re.findall(r"'([^']*)'", choices[2])
            close = difflib.get_close_matches(choices[1], names, n=1)
            message = f"unknown {'command' if self.prog == 'interp' else 'value'} {choices[1]!r}"
            message += (
                f" (did you mean {close[0]!r}?)" if close else f"; choose from {', '.join(names)}"
            )
        where = self.prog.removeprefix("interp").strip()
        raise InterpError(f"{where + ': ' if where else ''}{message} (see: {self.prog} --help)")


def _guess_option(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    options = list(parser._option_string_actions)
    for word in extras:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.split("=", 1)[0], options, n=1, cutoff=0.6)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def _typed(kind: type, check):
    """An argparse `type=` that converts with `kind`, then applies `check`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{'an integer' if kind is int else 'a number'} is needed, not {text!r}"
            ) from None
        try:
            return check(value)
        except InterpError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def number(**bounds):
    """A finite float within `bounds` (see `validate.number`)."""
    return _typed(float, lambda v: validate.number(v, "the value", **bounds))


def integer(low: int | None = None, high: int | None = None):
    return _typed(int, lambda v: validate.integer(v, "the value", low=low, high=high))


seed = integer(0, validate.MAX_SEED)


def add_model_option(parser: argparse.ArgumentParser, default: str) -> None:
    """--model and where it runs: --device, --dtype, --n-devices (`interp.load` checks them)."""
    parser.add_argument("--model", default=default, help=MODEL_HELP)
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N, mps, or auto (default: CUDA if any)"
    )
    parser.add_argument(
        "--dtype", default="auto",
        help="auto (default: the checkpoint's dtype on a GPU, float32 on the CPU), float32, "
        "bfloat16 or float16",
    )  # fmt: skip
    parser.add_argument(
        "--n-devices", type=integer(1), default=None, metavar="N",
        help="split the model over N GPUs (accelerate places the layers)",
    )  # fmt: skip


def model_words(args: argparse.Namespace) -> list[str]:
    """The model options as command-line words, every default spelled out (to re-run)."""
    words = ["--model", args.model, "--device", args.device, "--dtype", args.dtype]
    return words + (["--n-devices", str(args.n_devices)] if args.n_devices else [])


def _read_prompt_file(name: str) -> str:
    try:
        return Path(name).read_bytes().decode("utf-8")
    except OSError as exc:
        raise InterpError(f"cannot read prompts from {name}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise InterpError(f"{name} is not UTF-8 text (byte {exc.start})") from None


def prompt(value: str) -> str:
    """A prompt; `@FILE` is FILE's whole text (`@@...` for a prompt starting with @)."""
    if value.startswith("@") and not value.startswith("@@") and len(value) > 1:
        return validate.text(
            _read_prompt_file(value[1:]).removesuffix("\n"), f"the prompt in {value[1:]}"
        )
    return validate.text(value.removeprefix("@") if value.startswith("@@") else value)


def prompts(value: str) -> list[str]:
    """Prompts; `@FILE` is one prompt per non-blank line of FILE."""
    if value.startswith("@") and not value.startswith("@@") and len(value) > 1:
        lines = [line for line in _read_prompt_file(value[1:]).splitlines() if line.strip()]
        if not lines:
            raise InterpError(f"{value[1:]} holds no prompts")
        return [validate.text(line, f"a prompt in {value[1:]}") for line in lines]
    return [prompt(value)]


class Flatten(argparse.Action):
    """For `nargs="+", type=prompts`: one flat list, whichever words were files."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [text for group in values for text in group])


def add_prompts(parser: argparse.ArgumentParser, nargs: str = "+") -> None:
    parser.add_argument("prompts", nargs=nargs, metavar="PROMPT", type=prompts, action=Flatten,
                        help="text, or @FILE for one prompt per line of FILE")  # fmt: skip


def add_prompt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", type=prompt, help="text, or @FILE for the text of FILE")
