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
from evaluation.digits_features import IMAGE_SIZE as DIGITS_IMAGE_SIZE
from evaluation.digits_features import DigitsRecipe, train_digits_features, write_digits_reference
from models import load_model
from models.checkerboard import scale_ratio_from_config
from models.checkpoint import build_generator
from models.checkpoint_format import LAST, load_checkpoint_file, read_config
from sweep import results as sr
from sweep.config import SweepConfig
from sweep.folder import SweepFolder
from sweep.grid import steps_settings
from sweep.report import BEST_MD, BY_STEPS_PER_SCALE, BY_TOTAL_STEPS, FID_VS_IS
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


@dataclass
class _Study:
    """What the study's stages share: the demo's config, its output folder and stages, the generators."""
    config: DemoConfig
    out: Path
    stages: Stages
    models: list[StudyModel]
    data_dir: Path
    count: int  # stages in all, for the log's "k/count"

    @property
    def reference(self) -> Path:
        return self.out / REFERENCE_DIR / REFERENCE_NAME

    @property
    def heldout(self) -> Path:
        return self.out / REFERENCE_DIR / HELDOUT_NAME

    @functools.cached_property
    def network(self):
        return train_digits_features(DigitsRecipe(val_fraction=self.config.val_fraction, split_seed=self.config.seed))

    @functools.cached_property
    def settings(self) -> dict:
        return {**self.config.study_settings(), "generators": {m.name: m.stage for m in self.models}}

    def sweep(self, run_dir: Path, output_dir: Path, cfg, steps, seed: int):
        run_sweep(_sweep_config(self.config, run_dir, self.reference, output_dir, cfg, steps, seed),
                  network=self.network, log=print)


def _run_study_stages(config: DemoConfig, out: Path, run: dict) -> dict:
    models = study_models(config)
    check_study(config, models)
    others = [m for m in models if m.stage != "generator"]
    count = 3 + len(others) + 4
    stages = Stages(out, config.force, (*OWN_FILES, *STUDY_FILES, *(m.config_name for m in others),
                                        *(m.stage for m in others)))
    total_start = time.perf_counter()
    data_dir, _ = train_stages(config, stages, out, count)
    study = _Study(config, out, stages, models, data_dir, count)
    _train_other_generators(study, others)
    _reference_stage(study)
    scored = _sweep_stage(study)
    rows = sr.read_rows(out / SWEEP_DIR)
    best = _best_points(study, rows)
    first = best[models[0].name]
    _noise_stage(study, first)
    training = _training_seeds_stage(study, best)

    report_start = time.perf_counter()
    report = {
        "best": sr.best_per_setting(rows, "digits"),
        "noise": _noise(first, out / NOISE_DIR, config),
        "training_seeds": training,
        **scored,
        "models": [_model_entry(out, m) for m in models],
        "settings": study.settings,
        "seconds_per_stage": {**stages.seconds, "report": time.perf_counter() - report_start},
        "reused_stages": stages.reused,
        "seconds_this_run": time.perf_counter() - total_start,
        "run": run,
        "files": {name: str(out / SWEEP_DIR / name) for name in (sr.RESULTS_CSV, sr.RESULTS_JSON, BEST_MD,
                                                                  FID_VS_IS, BY_STEPS_PER_SCALE, BY_TOTAL_STEPS)},
    }
    atomic_write_text(out / STUDY_REPORT, json.dumps(report, indent=1))
    return report


def _train_other_generators(study: _Study, others: list[StudyModel]):
    """main.py's training of each generator the demo's own stage does not already train."""
    config, out = study.config, study.out
    for index, model in enumerate(others, start=4):
        run_dir = out / model.stage
        log(f"{index}/{study.count} generator, {_describe(model)}: main.py training -> {run_dir}")
        path = write_generator_config(config, out, model.config_name, model.overrides)
        study.stages.run(model.stage, {"config": read_config(path), "args": config.generator_args,
                                       "seed": config.seed},
                         run_dir, lambda: train_generator(config, path, study.data_dir, run_dir))


def _reference_stage(study: _Study):
    config = study.config
    log(f"{study.count - 3}/{study.count} reference: the real training digits -> {study.reference}")

    def write_references():
        for path, split in ((study.reference, "train"), (study.heldout, "val")):
            write_digits_reference(_made(path.parent) / path.name, split, config.val_fraction, config.seed)

    study.stages.run("study_reference", {"val_fraction": config.val_fraction, "seed": config.seed},
                     study.reference.parent, write_references)


def _sweep_stage(study: _Study) -> dict:
    config, sweep_dir = study.config, study.out / SWEEP_DIR
    log(f"{study.count - 2}/{study.count} sweep: guidance {' '.join(config.study_cfg)} x steps per scale, "
        f"{config.study_samples} samples per point, digits features -> {sweep_dir}")

    def sweep() -> dict:
        """The sweep of every generator, and where the held-out real digits score (the run's record keeps it)."""
        for model in study.models:
            study.sweep(study.out / model.stage, sweep_dir, config.study_cfg, study_steps(config, model), config.seed)
        real = evaluate_samples(reference_statistics(study.reference, study.network), study.heldout, study.network)
        return {"real_heldout": {"num_images": _count(study.heldout), "reference_images": _count(study.reference),
                                 **real},
                "digits_network": {"identity": study.network.identity, "heldout_accuracy": study.network.accuracy}}

    return study.stages.run("study", study.settings, sweep_dir, sweep)


def _best_points(study: _Study, rows: list[dict]) -> dict:
    """Each generator's lowest-FID row of the sweep."""
    names = {c["path"]: c["name"] for c in SweepFolder(study.out / SWEEP_DIR).read_record()["checkpoints"]}
    return {m.name: _best_row([r for r in rows if r["checkpoint"] == names[str((study.out / m.stage).resolve())]],
                              "digits")
            for m in study.models}


def _noise_stage(study: _Study, first: dict):
    """The first generator's best point drawn again with other sampling seeds."""
    config, model, noise_dir = study.config, study.models[0], study.out / NOISE_DIR
    log(f"{study.count - 1}/{study.count} noise: {model.stage}'s best point (steps/scale "
        f"{first['steps_per_scale']}, cfg {first['cfg']:g}) with {config.study_noise_seeds} more seeds -> {noise_dir}")

    def noise():
        steps = str(first["steps_per_scale"]).replace(",", "/")
        for k in range(1, config.study_noise_seeds + 1):
            study.sweep(study.out / model.stage, _made(noise_dir) / f"seed{config.seed + k}", [str(first["cfg"])],
                        [steps], config.seed + k)

    study.stages.run("study_noise", {**study.settings, "point": {k: first[k] for k in sr.RUN_COLUMNS}}, noise_dir,
                     noise)


def _training_seeds_stage(study: _Study, best: dict) -> dict:
    """Every generator trained again with other seeds, each scored at its generator's best point."""
    config, training_dir = study.config, study.out / TRAINING_DIR
    log(f"{study.count}/{study.count} training seeds: every generator trained again with "
        f"{config.study_training_seeds} more seeds, scored at its best point and by its held-out NLL -> "
        f"{training_dir}")

    def retrain() -> dict:
        return {model.name: _retrain(study, model, best[model.name]) for model in study.models}

    points = {name: {k: point[k] for k in sr.RUN_COLUMNS} for name, point in best.items()}
    return study.stages.run("study_training", {**study.settings, "points": points}, training_dir, retrain)


def _retrain(study: _Study, model: StudyModel, point: dict) -> dict:
    config, training_dir = study.config, study.out / TRAINING_DIR
    steps = str(point["steps_per_scale"]).replace(",", "/")
    runs = {config.seed: (study.out / model.stage, point)}
    for seed in range(config.seed + 1, config.seed + 1 + config.study_training_seeds):
        run_dir = _made(training_dir) / f"{model.stage}_seed{seed}"
        train_generator(config, study.out / model.config_name, study.data_dir, run_dir, seed=seed)
        sweep_dir = training_dir / f"{model.stage}_seed{seed}_sweep"
        study.sweep(run_dir, sweep_dir, [str(point["cfg"])], [steps], config.seed)
        (row,) = sr.read_rows(sweep_dir)
        runs[seed] = (run_dir, row)
    return _training_spread(runs, study.data_dir / "val", config)


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
