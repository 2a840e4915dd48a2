"""The README's demo and study numbers, written from their reports and never typed: `publish` copies a
finished demo run's report to docs/demo_report.json and its grid to docs/demo_grid.png, and writes the
paragraph `numbers_paragraph(report)` into README.md between the two markers below; `publish_study`
does the same for the study (`demo.py --study`): docs/study_report.json, its results and plots in docs/,
and `study_block(report)` between the study's markers. Tests check that the README's text is the one
the committed reports give."""
from pathlib import Path

from common.files import atomic_write_bytes, atomic_write_text
from common.json_files import read_json
from sweep import results as sr
from sweep.report import BY_STEPS_PER_SCALE, BY_TOTAL_STEPS, FID_VS_IS

from .study import STUDY_REPORT, SWEEP_DIR, generator_label, study_table, training_table

BEGIN = "<!-- demo numbers: written by `python demo.py --update_readme` from docs/demo_report.json -->"
END = "<!-- end of demo numbers -->"
REPORT_COPY = Path("docs") / "demo_report.json"
GRID_COPY = Path("docs") / "demo_grid.png"
STUDY_BEGIN = ("<!-- study numbers: written by `python demo.py --study --update_readme` from "
               "docs/study_report.json -->")
STUDY_END = "<!-- end of study numbers -->"
STUDY_REPORT_COPY = Path("docs") / "study_report.json"
# The study's files in docs/: its results and plots, under names that say they are the study's
STUDY_COPIES = {sr.RESULTS_CSV: "study_results.csv", FID_VS_IS: "study_fid_vs_is.png",
                BY_STEPS_PER_SCALE: "study_by_steps_per_scale.png", BY_TOTAL_STEPS: "study_by_total_steps.png"}


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


def study_paragraph(report: dict) -> str:
    run, settings, real, noise = report["run"], report["settings"], report["real_heldout"], report["noise"]
    stages = ", ".join(f"{name} {_duration(s)}" for name, s in report["seconds_per_stage"].items())
    models = "; ".join(f"{generator_label(m['name'])}: "
                       f"{'scales' if len(m['scale_sizes']) > 1 else 'scale'} {'-'.join(map(str, m['scale_sizes']))} "
                       f"({m['tokens']} tokens)" for m in report["models"])
    seeds = ", ".join(f"{v:.1f}" for v in noise["digits_fid_by_seed"].values())
    point = noise["point"]
    return (f"Measured by `{run['command']}` on {run['date']} at commit {run['commit']} ({run['machine']}; other "
            f"work running beside it): {_duration(report['seconds_this_run'])} in all ({stages}). Generators "
            f"({report['models'][0]['epochs']} epochs each): {models}. Each point: {settings['study_samples']} "
            f"class-balanced samples (EMA weights, temperature {settings['study_temperature']:g}, guidance from step "
            f"{settings['study_cfg_start_step']}), guidance {' '.join(settings['study_cfg'])}, scored with the digits "
            f"network (held-out accuracy {report['digits_network']['heldout_accuracy']:.1%}) against the "
            f"{real['reference_images']} real training digits; the {real['num_images']} held-out real digits score "
            f"Digits FID {real['digits_fid']:.1f}, Digits IS {real['digits_is']:.2f}. Sampling noise: the best "
            f"point of ratio {report['models'][0]['name']} (steps/scale {point['steps_per_scale']}, cfg "
            f"{point['cfg']:g}) drawn with seeds {', '.join(noise['digits_fid_by_seed'])} scores Digits FID "
            f"{seeds}." + (f" Training noise (second table): every generator trained with the seeds listed, each "
                           f"training's held-out NLL (all scales) and its Digits FID at its generator's best point, "
                           f"drawn with the sampling seed {settings['seed']}." if "training_seeds" in report else ""))


def study_block(report: dict) -> str:
    """The README's study numbers: the paragraph, the best-guidance table and the training seeds' (a report
    written before --study_training_seeds existed has none)."""
    block = f"{_wrapped(study_paragraph(report))}\n\n{study_table(report)}"
    return f"{block}\n\n{training_table(report)}" if "training_seeds" in report else block


def _bounds(text: str, readme: Path, begin: str = BEGIN, end: str = END) -> tuple[int, int]:
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"{readme}: no numbers between '{begin}' and '{end}'")
    return start + len(begin), stop


def readme_paragraph(readme: Path, begin: str = BEGIN, end: str = END) -> str:
    """The text between the markers, as one line."""
    text = readme.read_text()
    start, stop = _bounds(text, readme, begin, end)
    return " ".join(text[start:stop].split())


def _wrapped(paragraph: str, width: int = 100) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def _full_run_report(report_path: Path, what: str) -> dict:
    """The report of a run that made every stage itself: a reused stage's time is not this run's."""
    report = read_json(report_path, dict, "a report of the demo")
    if report["reused_stages"]:
        raise ValueError(f"{report_path}: the stages {', '.join(report['reused_stages'])} were reused, so its "
                         f"times are not the {what}'s; run with --force to publish")
    return report


def publish(output_dir: Path, repo: Path) -> list[Path]:
    """A full run's report.json and grid.png into docs/, and its numbers into README.md; returns the
    files written."""
    report = _full_run_report(output_dir / "report.json", "pipeline")
    readme = repo / "README.md"
    text = readme.read_text()
    start, end = _bounds(text, readme)
    # Copies, not links: the next run replaces its own files, never the committed ones.
    written = [atomic_write_bytes(repo / copy, (output_dir / name).read_bytes())
               for name, copy in (("report.json", REPORT_COPY), ("grid.png", GRID_COPY))]
    atomic_write_text(readme, f"{text[:start]}\n{_wrapped(numbers_paragraph(report))}\n{text[end:]}")
    return [*written, readme]


def publish_study(output_dir: Path, repo: Path) -> list[Path]:
    """A full study run's report, results and plots into docs/, and its numbers into README.md;
    returns the files written."""
    report_path = output_dir / STUDY_REPORT
    report = _full_run_report(report_path, "study")
    readme = repo / "README.md"
    text = readme.read_text()
    start, end = _bounds(text, readme, STUDY_BEGIN, STUDY_END)
    written = [atomic_write_bytes(repo / STUDY_REPORT_COPY, report_path.read_bytes())]
    written += [atomic_write_bytes(repo / "docs" / copy, (output_dir / SWEEP_DIR / name).read_bytes())
                for name, copy in STUDY_COPIES.items()]
    atomic_write_text(readme, f"{text[:start]}\n{study_block(report)}\n{text[end:]}")
    return [*written, readme]
