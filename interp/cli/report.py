"""`interp report`: trace prompts on one model and write an HTML report comparing them."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from interp import validate
from interp.cli import args as a
from interp.cli.output import load_text_model
from interp.errors import InterpError
from interp.models.zoo import DEFAULT_MODEL


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "report",
        description="Trace each prompt (and its continuation) and write one self-contained "
        "HTML file that compares them section by section.",
    )
    a.add_prompts(parser, nargs="*")  # none with --from
    a.add_model_option(parser, DEFAULT_MODEL)
    parser.add_argument("--generate", type=a.integer(0), default=0, metavar="N",
                        help="tokens to generate after each prompt (default 0)")  # fmt: skip
    parser.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
    parser.add_argument("--seed", type=a.seed, default=0, help="sampling seed (default 0)")
    parser.add_argument("--temperature", type=a.number(low=0), default=0.0,
                        help="0 (default) decodes greedily")  # fmt: skip
    parser.add_argument("-o", "--output", required=True, metavar="PATH",
                        help="the HTML file to write, e.g. reports/NAME.html")  # fmt: skip
    parser.add_argument("--patch", nargs="+", metavar="TOKEN", default=None,
                        help="ANSWER [WRONG]: add activation patching from the first prompt "
                        "(clean) into the second (corrupted), same token count")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--save", metavar="DIR",
                        help="also keep the trace and its analyses in DIR")  # fmt: skip
    parser.add_argument("--from", dest="saved", metavar="DIR",
                        help="rebuild the report from a trace kept with --save")  # fmt: skip
    parser.add_argument("--survey", metavar="DIR", help="render a saved `interp survey` instead")
    parser.add_argument("--features", nargs="+", default=[], metavar="DIR",
                        help="sparse dictionaries (SAELens directories) to read each token "
                        "with: adds the features section")  # fmt: skip
    parser.add_argument("--feature-survey", metavar="DIR",
                        help="a survey run with the same --features: top contexts and "
                        "densities in the feature view")  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    import interp
    from interp.report import build_report

    if not args.output.endswith((".html", ".htm")):
        raise InterpError(f"the report is HTML: name it {args.output}.html")
    if args.patch is not None and (len(args.patch) > 2 or len(args.prompts) < 2):
        raise InterpError("--patch takes ANSWER [WRONG] and needs two prompts: clean, corrupted")
    validate.output_path(args.output)  # before the model loads: a mistake costs nothing
    if args.save:
        validate.output_path(Path(args.save) / "meta.json")
    if args.survey is not None:  # a saved survey: no prompts, no model
        from interp.report.survey import build_survey_report

        print(build_survey_report(args.survey, args.output))
        return 0
    if bool(args.prompts) == bool(args.saved):
        raise InterpError("give prompts to trace, or --from DIR (a trace kept with --save)")
    if args.saved:
        if args.save:
            raise InterpError("--from reads a kept trace; --save keeps a new run: give one")
        trace = interp.Trace.load(args.saved)
        print(build_report(trace, args.output, progress=not args.no_progress))
        return 0
    dictionaries = _dictionaries(args)
    model = load_text_model(args)
    texts = [interp.prompts.format_prompt(model.tokenizer, p, chat=args.chat) for p in args.prompts]
    sampling = interp.Sampling(temperature=args.temperature, seed=args.seed)
    trace = interp.trace(model, texts, max_new_tokens=args.generate, sampling=sampling,
                         features=dictionaries)  # fmt: skip
    trace.meta["command"] = command_line(args)
    if args.feature_survey:
        trace.meta["feature_survey"] = args.feature_survey
    if args.patch is not None:
        trace.meta["patch"] = {"answer": args.patch[0], "wrong": (args.patch[1:] or [None])[0]}
    path = build_report(
        trace, args.output, model=model, progress=not args.no_progress, save=args.save
    )
    print(path)
    return 0


def _dictionaries(args: argparse.Namespace) -> list:
    """The --features dictionaries and --feature-survey, read before the model loads."""
    if args.feature_survey and not args.features:
        raise InterpError("--feature-survey needs --features (the dictionaries it counted)")
    if not args.features:
        return []
    from interp.features import load

    dictionaries = [load(path) for path in args.features]
    if args.feature_survey:
        from interp.survey.output import Survey

        if "feature_contexts" not in Survey.load(args.feature_survey).tables:
            raise InterpError(f"{args.feature_survey} is a survey without features")
    return dictionaries


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from the parsed arguments with every default spelled out and
    shell quoting, so the line printed in the report re-runs exactly (sys.argv may belong to
    a caller of `interp.cli.main`, not to this command)."""
    words = ["interp", "report", *args.prompts, *a.model_words(args)]
    words += ["--generate", str(args.generate), "--seed", str(args.seed)]
    words += ["--temperature", str(args.temperature)] + (["--chat"] if args.chat else [])
    words += ["--patch", *args.patch] if getattr(args, "patch", None) else []
    words += ["--features", *args.features] if getattr(args, "features", None) else []
    words += (
        ["--feature-survey", args.feature_survey] if getattr(args, "feature_survey", None) else []
    )
    return shlex.join([*words, "-o", args.output])
