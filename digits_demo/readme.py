"""The README's demo numbers, written from the demo's report and never typed: `publish` copies a
finished run's report to docs/demo_report.json and its grid to docs/demo_grid.png, and writes the
paragraph `numbers_paragraph(report)` into README.md between the two markers below; a test checks
that the README's paragraph is the one docs/demo_report.json gives."""
import json
from pathlib import Path

from common.files import atomic_write_bytes, atomic_write_text

BEGIN = "<!-- demo numbers: written by `python demo.py --update_readme` from docs/demo_report.json -->"
END = "<!-- end of demo numbers -->"
REPORT_COPY = Path("docs") / "demo_report.json"
GRID_COPY = Path("docs") / "demo_grid.png"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def numbers_paragraph(report: dict) -> str:
    run, nll, cls = report["run"], report["heldout_nll"], report["classifier"]
    per_class = cls["generated_accuracy_per_class"]
    worst = min(per_class, key=lambda c: (per_class[c], int(c)))
    stages = ", ".join(f"{name} {_duration(s)}" for name, s in report["seconds_per_stage"].items())
    scales = ", ".join(f"{s}x{s} {v:.3f}" for s, v in nll["per_token_nats"].items())
    return (f"Measured by `{run['command']}` on {run['date']} at commit {run['commit']} ({run['machine']}; other "
            f"work running beside it): {_duration(report['seconds_this_run'])} in all ({stages}). "
            f"{cls['generated_accuracy']:.1%} of the {cls['num_generated']} generated digits are recognised as "
            f"their requested class (the least recognised class, {worst}: {per_class[worst]:.1%}); the same "
            f"classifier recognises {cls['heldout_real_accuracy']:.1%} of the {cls['num_heldout_real']} held-out "
            f"real digits. Held-out NLL per token (nats, {nll['num_images']} images): {scales}; all scales "
            f"{nll['per_token_nats_all_scales']:.3f}.")


def _bounds(text: str, readme: Path) -> tuple[int, int]:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no demo numbers between '{BEGIN}' and '{END}'")
    return start + len(BEGIN), end


def readme_paragraph(readme: Path) -> str:
    """The paragraph between the markers, as one line."""
    text = readme.read_text()
    start, end = _bounds(text, readme)
    return " ".join(text[start:end].split())


def _wrapped(paragraph: str, width: int = 100) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def publish(output_dir: Path, repo: Path) -> list[Path]:
    """A full run's report.json and grid.png into docs/, and its numbers into README.md; returns the
    files written."""
    report_path = output_dir / "report.json"
    report = json.loads(report_path.read_text())
    if report["reused_stages"]:
        raise ValueError(f"{report_path}: the stages {', '.join(report['reused_stages'])} were reused, so its "
                         f"times are not the pipeline's; run with --force to publish")
    readme = repo / "README.md"
    text = readme.read_text()
    start, end = _bounds(text, readme)
    # Copies, not links: the next run replaces its own files, never the committed ones.
    written = [atomic_write_bytes(repo / copy, (output_dir / name).read_bytes())
               for name, copy in (("report.json", REPORT_COPY), ("grid.png", GRID_COPY))]
    atomic_write_text(readme, f"{text[:start]}\n{_wrapped(numbers_paragraph(report))}\n{text[end:]}")
    return [*written, readme]
