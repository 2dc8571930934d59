"""`build_report`: traces -> one self-contained HTML file, written atomically.

The page needs nothing outside itself (CSS inline, figures as data URIs, the views' code and
data inline), so it opens offline and can be mailed. The temporary file sits next to the target
and is renamed over it only once complete: a failure leaves no half-written report behind.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jinja2
import matplotlib
from tqdm import tqdm

from interp.errors import InterpError
from interp.files import write_atomic
from interp.report.derived import ANALYSES, derive, save_derived
from interp.report.inputs import ReportInputs
from interp.report.parts import RC, Section
from interp.report.sections import SECTIONS, summary_section
from interp.report.views import page as views_page
from interp.trace import Trace

TEMPLATES = Path(__file__).parent / "templates"
NO_COMMAND = "(none recorded: traced from Python; the interp command records its own)"


def build_report(
    traces: Trace | Sequence[Trace],
    path: str | Path,
    *,
    model=None,
    title: str | None = None,
    progress: bool = True,
    save: str | Path | None = None,
) -> Path:
    """Write the report of `traces` (live or `Trace.load`ed; several prompts each, compared
    side by side) to `path` and return it. `model` lets analyses that run the model again
    (the induction probe, the coverage causal check) run; without it they show a note.

    `save`: a directory to keep each live trace in (frames, meta and the analysis frames this
    report derived; `save/<i>` for the i-th of several traces), so that
    `build_report(Trace.load(save), ...)` rebuilds the same report without the model.
    """
    traces = [traces] if isinstance(traces, Trace) else list(traces)
    if not traces:
        raise InterpError("no traces to report")
    path = Path(path)
    if path.is_dir():
        raise InterpError(f"{path} is a directory; give a file name such as {path}/report.html")
    total = len(ANALYSES) * len(traces) + len(SECTIONS) + 2  # + summary, writing
    bar = tqdm(total=total, desc="report", unit="step", file=sys.stderr, disable=not progress,
               leave=False)  # fmt: skip

    started: list[str] = []

    def step(name: str) -> None:
        if started:  # the step under way is done now
            bar.update()
        started.append(name)
        bar.set_postfix_str(name)

    with bar:
        derived = [derive(t, model, i == 0, step) for i, t in enumerate(traces)]
        if save is not None:
            for i, (trace, frames) in enumerate(zip(traces, derived)):
                save_derived(trace, frames, Path(save) if len(traces) == 1 else Path(save) / str(i))
        inputs = ReportInputs(traces, derived)
        sections = []
        for build in SECTIONS:
            step(build.__name__.removesuffix("_section"))
            sections.append(_build(build, inputs))
        step("summary")
        sections.append(summary_section(inputs, sections))
        step("writing")
        write_atomic(path, render(inputs, sections, title))
        bar.update()
    return path


def _build(build, inputs: ReportInputs) -> Section:
    """One section; a failure becomes a note in that section so the rest still gets made."""
    try:
        with matplotlib.rc_context(RC):
            return build(inputs)
    except Exception as exc:  # the rest of the report is worth more than one section
        name = build.__name__.removesuffix("_section")
        print(f"interp: warning: the {name} section failed: {exc!r}", file=sys.stderr)
        return Section(name, name.capitalize(), "", notes=[f"This section failed: {exc!r}"])


def render(inputs: ReportInputs, sections: list[Section], title: str | None = None) -> str:
    model = str(inputs.meta.get("model", "?"))
    title = title or f"interp report: {model}"
    return render_page(title, model, _runs(inputs), inputs.prompts, sections)


def render_page(title: str, model: str, runs: list[dict], prompts, sections) -> str:
    """The page itself: shared by the trace report and the survey report."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # prompts and tokens are user text: never trusted as markup
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(
        title=title, model=model, runs=runs, prompts=prompts, sections=sections,
        version=_version(),
        # The views' code and style, once, where a section holds a view.
        view_assets=views_page.assets() if any(s.views for s in sections) else "",
    )  # fmt: skip


def _runs(inputs: ReportInputs) -> list[dict]:
    """Provenance per trace: the command, seed and sampling settings that made it."""
    runs = []
    ends = [*inputs.offsets[1:], len(inputs.prompts)]
    for trace, start, end in zip(inputs.traces, inputs.offsets, ends):
        sampling = dict(trace.meta.get("sampling", {}))
        seed = str(sampling.pop("seed", "?"))
        if sampling.get("temperature", 0) <= 0:
            seed += " (greedy decoding: the seed changes nothing)"
        settings = [f"{k} {v}" for k, v in sampling.items()]
        settings.append(f"{trace.meta.get('max_new_tokens', 0)} new tokens")
        runs.append(
            {
                "prompts": ", ".join(inputs.labels[start:end]),
                "command": trace.meta.get("command") or NO_COMMAND,
                "seed": seed,
                "sampling": ", ".join(settings),
            }
        )
    return runs


def _version() -> str:
    try:
        return version("interp")
    except PackageNotFoundError:
        return "(not installed)"
