"""The `interp` command: parses arguments and calls the library; user mistakes exit 2.

Only the command being run is imported (with its torch / pandas / transformers imports):
`interp --help` and a mistyped option cost a few milliseconds, not a model stack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from interp.cli.args import Parser
from interp.errors import InterpError
from interp.files import cleanup_on_sigterm

# Each module defines `add_parser(subparsers)` and `run(args) -> int`.
COMMANDS = [
    "models",
    "generate",
    "journey",
    "coverage",
    "patch",
    "induction",
    "experts",
    "survey",
    "report",
    "features",
]
SUMMARY = {
    "models": "list the embedded models",
    "generate": "continue a prompt (greedy or sampled)",
    "journey": "one token's journey: norms, writes, sources, lens, sampling",
    "coverage": "prompt tokens that carried the answer, checked by blocking",
    "patch": "activation patching from a clean into a corrupted prompt",
    "induction": "find induction heads: attention scores checked by ablation",
    "experts": "MoE routing: load balance, locality, domain specialisation",
    "survey": "expert, head and layer statistics over a corpus",
    "report": "HTML report comparing prompts",
    "features": "a token's top SAE / transcoder features",
}


class _Commands:
    """The subparsers action, giving each command its one-line summary from SUMMARY (the one
    place it is written, so the listing reads the same whichever command is parsed)."""

    def __init__(self, action):
        self.action = action

    def add_parser(self, name: str, **kwargs) -> Parser:
        kwargs["help"] = SUMMARY.get(name)
        return self.action.add_parser(name, **kwargs)


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The parser; with `argv`, only the command it names gets its options (the others are
    listed by name), so only that command's module is imported."""
    parser = Parser(
        prog="interp", description="Follow a token through a transformer and measure each step."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The top level has no option but --help: its first other word names the command.
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name in COMMANDS:
        if argv is None or name == chosen:
            module = importlib.import_module(f"interp.cli.{name}")
            command = module.add_parser(_Commands(sub))
            command.set_defaults(run=module.run)
        else:
            sub.add_parser(name, help=SUMMARY.get(name))
        parser.commands[name] = sub.choices[name]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with cleanup_on_sigterm():
            args = build_parser(argv).parse_args(argv)
            return args.run(args)
    except InterpError as exc:
        print(f"interp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interp: interrupted", file=sys.stderr)
        return 130
