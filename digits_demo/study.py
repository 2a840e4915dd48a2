"""The scale-ratio study (`demo.py --study`): the paper's Fig. 4a and Fig. 5 on the digits, on a CPU.

The demo's generator (configs/config_digits.yaml) is trained at each of config.study_models (scale
ratios, or a single scale), all on the demo's data with the demo's autoencoder, then each is swept
over guidance x steps per scale with the sweep library (sweep/) into one sweep folder, scored with
the digits feature network (evaluation/digits_features.py) against the real training digits. Stages
(after the demo's data, autoencoder and generator, reused when they finished):

  generator_<model>  main.py's training of the demo's config with model.scale_ratio / single_scale set
                     (the model the demo's config already is uses the demo's generator stage)
  study_reference    the real training digits as an ADM batch: the sweep's reference
  study              run_sweep for each generator: results, best guidance, the Fig. 4a/5 plots
  study_noise        the first generator's best point drawn again with other seeds (sampling noise)
  study_training     every generator trained again with other seeds, each scored at its generator's
                     best point and by its held-out NLL (the spread over trainings)

then <output_dir>/study_report.json. Why the training digits as the reference: the paper's reference
batch (ADM's) is drawn from the training images, the generators model the training split, and its
1438 images give steadier statistics than the 359 held-out ones; the held-out real digits scored
against it (`real_heldout` in the report) show where real, unseen digits land.
"""
import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common import npz
from common.files import atomic_write_text
from evaluation import evaluate_samples, metric_key, reference_statistics
from evaluation import sweep_results as sr
from evaluation.digits_features import DigitsRecipe, train_digits_features, write_digits_reference
from evaluation.features import DIGITS_IMAGE_SIZE
from models import load_model
from models.checkerboard import scale_ratio_from_config
from models.checkpoint import build_generator
from models.checkpoint_format import LAST, load_checkpoint_file, read_config
from sweep.config import SweepConfig
from sweep.folder import SweepFolder
from sweep.grid import steps_settings
from sweep.run import run_sweep

from .config import SINGLE_SCALE, DemoConfig
from .pipeline import OWN_FILES, GENERATOR_CONFIG, override, run_in_output_dir, train_generator, train_stages
from .pipeline import write_generator_config
from .report import has_ema, heldout_nll
from .stages import Stages, log

REFERENCE_DIR, SWEEP_DIR, NOISE_DIR, TRAINING_DIR = "study_reference", "study", "study_noise", "study_training"
REFERENCE_NAME, HELDOUT_NAME = "digits_train.npz", "digits_heldout.npz"
STUDY_REPORT = "study_report.json"
STUDY_FILES = (REFERENCE_DIR, SWEEP_DIR, NOISE_DIR, TRAINING_DIR, STUDY_REPORT)


@dataclass(frozen=True)
class StudyModel:
    name: str  # as --study_models gives it: "2", "sqrt(2)", "single"
    overrides: dict  # of the demo's model section (None: remove the key)
    stage: str  # its training stage, also its run folder: "generator" for the demo's own model
    config_name: str  # its generator config in the output folder

    @property
    def single(self) -> bool:
        return self.name == SINGLE_SCALE


def study_models(config: DemoConfig) -> list[StudyModel]:
    """The study's generators; the one the demo's config already is trains as the demo's generator."""
    section, _ = read_config(config.generator_config)
    models = []
    for name in dict.fromkeys(config.study_models):
        if name == SINGLE_SCALE:
            overrides = {"single_scale": True}
        else:
            ratio = scale_ratio_from_config(name)
            overrides = {"scale_ratio": int(ratio) if ratio.is_integer() else name, "single_scale": None}
        if override(section, overrides) == section:
            models.append(StudyModel(name, overrides, "generator", GENERATOR_CONFIG))
        else:
            tag = SINGLE_SCALE if name == SINGLE_SCALE else "ratio_" + re.sub(r"[^A-Za-z0-9.]", "", name)
            models.append(StudyModel(name, overrides, f"generator_{tag}", f"generator_config_{tag}.yaml"))
    return models


def check_study(config: DemoConfig, models: list[StudyModel]) -> None:
    """Every generator built (on the meta device, from the demo's autoencoder config) and its steps
    checked, before any stage runs: a ratio the 8x8 latent grid cannot take is one line."""
    if config.img_size != DIGITS_IMAGE_SIZE:
        raise ValueError(f"--study scores digits with the digits feature network, which reads {DIGITS_IMAGE_SIZE} px "
                         f"images; --img_size is {config.img_size}")
    section, _ = read_config(config.generator_config)
    section = override(section, {"autoenc": {**section.get("autoenc", {}), "config_path":
                                             str(Path(config.autoencoder_config).resolve())}})
    for model in models:
        with torch.device("meta"):
            try:
                meta = build_generator(override(section, model.overrides), Path(config.generator_config).parent,
                                       load_autoencoder_weights=False, source=config.generator_config)
            except ValueError as e:
                raise ValueError(f"--study_models {model.name}: {e}") from None
        for steps in steps_settings(study_steps(config, model)):
            try:
                meta.steps_per_scale_list(list(steps) if isinstance(steps, tuple) else steps)
            except ValueError as e:
                raise ValueError(f"--study_models {model.name}: {e}") from None


def study_steps(config: DemoConfig, model: StudyModel) -> list[str]:
    return config.study_single_steps if model.single else config.study_steps


def run_study(config: DemoConfig, argv: list[str] = ()) -> dict:
    """Every stage of the study (reusing finished ones); returns the report also written to
    <output_dir>/study_report.json."""
    return run_in_output_dir(config, argv, _run_study_stages)


def _sweep_config(config: DemoConfig, run_dir: Path, reference: Path, output_dir: Path, cfg, steps,
                  seed: int) -> SweepConfig:
    return SweepConfig(checkpoint=[str(run_dir)], reference=str(reference), output_dir=str(output_dir), cfg=cfg,
                       steps_per_scale=steps, num_samples=config.study_samples, features="digits",
                       cfg_start_step=config.study_cfg_start_step, temperature=config.study_temperature, seed=seed,
                       use_ema=has_ema(run_dir), batch_size=config.sample_batch_size,
                       shard_size=config.study_samples, device="cpu")


def _run_study_stages(config: DemoConfig, out: Path, run: dict) -> dict:
    models = study_models(config)
    check_study(config, models)
    others = [m for m in models if m.stage != "generator"]
    count = 3 + len(others) + 4
    stages = Stages(out, config.force, (*OWN_FILES, *STUDY_FILES, *(m.config_name for m in others),
                                        *(m.stage for m in others)))
    total_start = time.perf_counter()
    data_dir, _ = train_stages(config, stages, out, count)
    for index, model in enumerate(others, start=4):
        run_dir = out / model.stage
        log(f"{index}/{count} generator, {_describe(model)}: main.py training -> {run_dir}")
        path = write_generator_config(config, out, model.config_name, model.overrides)
        stages.run(model.stage, {"config": read_config(path), "args": config.generator_args, "seed": config.seed},
                   run_dir, lambda: train_generator(config, path, data_dir, run_dir))

    reference, heldout = out / REFERENCE_DIR / REFERENCE_NAME, out / REFERENCE_DIR / HELDOUT_NAME
    log(f"{count - 3}/{count} reference: the real training digits -> {reference}")

    def write_references():
        for path, split in ((reference, "train"), (heldout, "val")):
            write_digits_reference(_made(path.parent) / path.name, split, config.val_fraction, config.seed)

    stages.run("study_reference", {"val_fraction": config.val_fraction, "seed": config.seed}, reference.parent,
               write_references)
    network = functools.cache(lambda: train_digits_features(DigitsRecipe(val_fraction=config.val_fraction,
                                                                         split_seed=config.seed)))
    sweep_dir = out / SWEEP_DIR
    log(f"{count - 2}/{count} sweep: guidance {' '.join(config.study_cfg)} x steps per scale, "
        f"{config.study_samples} samples per point, digits features -> {sweep_dir}")
    settings = {**config.study_settings(), "generators": {m.name: m.stage for m in models}}

    def sweep() -> dict:
        """The sweep of every generator, and where the held-out real digits score (the run's record keeps it)."""
        for model in models:
            run_sweep(_sweep_config(config, out / model.stage, reference, sweep_dir, config.study_cfg,
                                    study_steps(config, model), config.seed), network=network(), log=print)
        real = evaluate_samples(reference_statistics(reference, network()), heldout, network())
        return {"real_heldout": {"num_images": _count(heldout), "reference_images": _count(reference), **real},
                "digits_network": {"identity": network().identity, "heldout_accuracy": network().accuracy}}

    scored = stages.run("study", settings, sweep_dir, sweep)
    rows = sr.read_rows(sweep_dir)
    names = {c["path"]: c["name"] for c in SweepFolder(sweep_dir).read_record()["checkpoints"]}
    noise_dir = out / NOISE_DIR
    first = _best_row([r for r in rows if r["checkpoint"] == names[str((out / models[0].stage).resolve())]], "digits")
    log(f"{count - 1}/{count} noise: {models[0].stage}'s best point (steps/scale {first['steps_per_scale']}, cfg "
        f"{first['cfg']:g}) with {config.study_noise_seeds} more seeds -> {noise_dir}")

    def noise():
        for k in range(1, config.study_noise_seeds + 1):
            steps = str(first["steps_per_scale"]).replace(",", "/")
            folder = _made(noise_dir) / f"seed{config.seed + k}"
            run_sweep(_sweep_config(config, out / models[0].stage, reference, folder, [str(first["cfg"])], [steps],
                                    config.seed + k), network=network(), log=print)

    stages.run("study_noise", {**settings, "point": {k: first[k] for k in sr.RUN_COLUMNS}}, noise_dir, noise)

    training_dir = out / TRAINING_DIR
    best = {m.name: _best_row([r for r in rows if r["checkpoint"] == names[str((out / m.stage).resolve())]], "digits")
            for m in models}
    log(f"{count}/{count} training seeds: every generator trained again with {config.study_training_seeds} more "
        f"seeds, scored at its best point and by its held-out NLL -> {training_dir}")

    def retrain() -> dict:
        spreads = {}
        for model in models:
            point = best[model.name]
            steps = str(point["steps_per_scale"]).replace(",", "/")
            runs = {config.seed: (out / model.stage, point)}
            for seed in range(config.seed + 1, config.seed + 1 + config.study_training_seeds):
                run_dir = _made(training_dir) / f"{model.stage}_seed{seed}"
                train_generator(config, out / model.config_name, data_dir, run_dir, seed=seed)
                sweep_dir = training_dir / f"{model.stage}_seed{seed}_sweep"
                run_sweep(_sweep_config(config, run_dir, reference, sweep_dir, [str(point["cfg"])], [steps],
                                        config.seed), network=network(), log=print)
                (row,) = sr.read_rows(sweep_dir)
                runs[seed] = (run_dir, row)
            spreads[model.name] = _training_spread(runs, data_dir / "val", config)
        return spreads

    training = stages.run("study_training", {**settings, "points": {n: {k: p[k] for k in sr.RUN_COLUMNS}
                                                                     for n, p in best.items()}},
                          training_dir, retrain)

    report_start = time.perf_counter()
    report = {
        "best": sr.best_per_setting(rows, "digits"),
        "noise": _noise(first, noise_dir, config),
        "training_seeds": training,
        **scored,
        "models": [_model_entry(out, m) for m in models],
        "settings": settings,
        "seconds_per_stage": {**stages.seconds, "report": time.perf_counter() - report_start},
        "reused_stages": stages.reused,
        "seconds_this_run": time.perf_counter() - total_start,
        "run": run,
        "files": {name: str(sweep_dir / name) for name in (sr.RESULTS_CSV, sr.RESULTS_JSON, sr.BEST_MD,
                                                            sr.FID_VS_IS, sr.BY_STEPS_PER_SCALE, sr.BY_TOTAL_STEPS)},
    }
    atomic_write_text(out / STUDY_REPORT, json.dumps(report, indent=1))
    return report


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _describe(model: StudyModel) -> str:
    return "single scale" if model.single else f"scale ratio {model.name}"


def _best_row(rows, features: str) -> dict:
    return min(rows, key=lambda r: r[metric_key(features, "fid")])


def _count(npz_path: Path) -> int:
    return npz.array_header(npz_path, "arr_1").shape[0]


def _noise(first: dict, noise_dir: Path, config: DemoConfig) -> dict:
    """The digits FID of the first generator's best point by seed: the study's seed and the others."""
    fid = metric_key("digits", "fid")
    by_seed = {str(config.seed): first[fid]}
    for k in range(1, config.study_noise_seeds + 1):
        (row,) = sr.read_rows(noise_dir / f"seed{config.seed + k}")
        by_seed[str(config.seed + k)] = row[fid]
    return {"point": {k: first[k] for k in sr.RUN_COLUMNS}, "digits_fid_by_seed": by_seed,
            "spread": max(by_seed.values()) - min(by_seed.values())}


def _training_spread(runs: dict, val_dir: Path, config: DemoConfig) -> dict:
    """Per training seed: the generator's held-out NLL (all scales) and the Digits FID of its best
    point (drawn with the study's sampling seed); and the mean, min and max of each."""
    fid = metric_key("digits", "fid")
    by_seed = {str(seed): {"heldout_nll": heldout_nll(run_dir, val_dir, config.eval_batch_size)
                           ["per_token_nats_all_scales"], "digits_fid": row[fid]}
               for seed, (run_dir, row) in runs.items()}
    summary = {}
    for key in ("heldout_nll", "digits_fid"):
        values = [entry[key] for entry in by_seed.values()]
        summary[key] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    point = next(iter(runs.values()))[1]
    return {"point": {k: point[k] for k in sr.RUN_COLUMNS}, "by_training_seed": by_seed, **summary}


def _model_entry(out: Path, model: StudyModel) -> dict:
    run_dir = out / model.stage
    scales = load_model(run_dir).scale_sizes
    return {"name": model.name, "stage": model.stage, "checkpoint": str(run_dir), "scale_sizes": scales,
            "tokens": sum(s * s for s in scales), "epochs": int(load_checkpoint_file(run_dir / LAST)["epoch"]) + 1}


def generator_label(name) -> str:
    return "single scale" if name == SINGLE_SCALE else f"ratio {name}"


def study_table(report: dict) -> str:
    """The best guidance per generator and steps setting, as a markdown table."""
    fid, is_ = metric_key("digits", "fid"), metric_key("digits", "is")
    precision, recall = metric_key("digits", "precision"), metric_key("digits", "recall")
    names = {m["checkpoint"]: m["name"] for m in report["models"]}
    lines = ["| generator | steps/scale | total steps | best cfg | Digits FID | Digits IS | near-best IS mean "
             "(min-max) | Digits precision | Digits recall |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["best"]:
        name = names.get(row["checkpoint"], row["checkpoint"])
        lines.append(f"| {generator_label(name)} | {row['steps_per_scale']} | {row['total_steps']} | "
                     f"{row['best_cfg']:g} | {row[fid]:.1f} | {row[is_]:.2f} | {row[is_ + '_near_best_mean']:.2f} "
                     f"({row[is_ + '_near_best_min']:.2f}-{row[is_ + '_near_best_max']:.2f}) | {row[precision]:.3f} | "
                     f"{row[recall]:.3f} |")
    return "\n".join(lines)


def training_table(report: dict) -> str:
    """Per generator: its best point, and the held-out NLL and Digits FID there over training seeds."""
    lines = ["| generator | best point (steps/scale, cfg) | training seeds | held-out NLL mean (min-max) | "
             "Digits FID mean (min-max) |", "|---|---|---|---|---|"]
    for name, entry in report["training_seeds"].items():
        nll, fid, point = entry["heldout_nll"], entry["digits_fid"], entry["point"]
        lines.append(f"| {generator_label(name)} | {point['steps_per_scale']}, {point['cfg']:g} | "
                     f"{', '.join(entry['by_training_seed'])} | {nll['mean']:.3f} ({nll['min']:.3f}-{nll['max']:.3f}) | "
                     f"{fid['mean']:.1f} ({fid['min']:.1f}-{fid['max']:.1f}) |")
    return "\n".join(lines)


def study_summary(report: dict) -> str:
    noise, real = report["noise"], report["real_heldout"]
    seeds = ", ".join(f"seed {s}: {v:.1f}" for s, v in noise["digits_fid_by_seed"].items())
    return "\n".join([study_table(report), training_table(report),
                      f"held-out real digits against the reference: Digits FID {real['digits_fid']:.1f} "
                      f"({real['num_images']} images)",
                      f"sampling noise, {report['models'][0]['name']}'s best point: {seeds}",
                      "seconds per stage: " + ", ".join(f"{k} {v:.0f}" + (" (reused)" if k in report["reused_stages"]
                                                                         else "")
                                                       for k, v in report["seconds_per_stage"].items())
                      + f"; this run {report['seconds_this_run']:.0f}",
                      f"files: {', '.join(report['files'].values())}"])
