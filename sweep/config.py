"""What a sweep is asked for: `SweepConfig`, one field per main_sweep.py option.

    config = SweepConfig(checkpoint=["pretrained_models/checkerboard-L-2x"], cfg=["1.0:2.0:0.1"],
                         steps_per_scale=["4"], reference="VIRTUAL_imagenet256_labeled.npz",
                         output_dir="sweeps/l2x", confirm=50000)
    run_sweep(config)                  # sweep/run.py

Its own checks (`validate`: the values; `check_paths`: the files named) need no model;
sweep/run.py checks the rest (each point against its model, the reference's image size, the
folder) before anything is written.
"""
import os
from dataclasses import dataclass

from common.config import option, recheck
from common.folders import check_outside
from evaluation.features import FEATURES
from evaluation.inception import GRAPH_NAME
from sampling.config import DEFAULT_CFG_START_STEP, SampleConfig
from sampling.seeds import MAX_SEED
from sweep.grid import cfg_values, steps_settings

SEARCH_SAMPLES = 10_000  # the guidance search's sample count (as RandAR's search); --confirm reruns the best


@dataclass
class SweepConfig:
    checkpoint: list[str] = option("model folders or checkpoint files (published layout, with config.yaml); each "
                                   "is swept over the whole grid", metavar="CHECKPOINT", path=True)
    reference: str = option("reference batch (ADM layout npz, image folder or a statistics file), e.g. "
                            "VIRTUAL_imagenet256_labeled.npz", path=True)
    output_dir: str = option("the sweep's folder: sweep.json, results.csv/.json, best_guidance.md/.csv, the plots, "
                             "reference_cache/ and points/<model>/<point>/", path=True)
    cfg: list[str] = option("guidance weights and ranges start:stop:step (inclusive of stop), e.g. 1.0:2.0:0.1 "
                            "or 1.25,1.5,2.0", metavar="CFG")
    steps_per_scale: list[str] = option("steps-per-scale settings, e.g. 2,4,8; one value per scale joined by "
                                        "slashes, e.g. 1/4/4/4/4", metavar="STEPS")
    num_samples: int = option("samples per point of the guidance search (class-balanced, FID mode)", SEARCH_SAMPLES,
                              ge=1)
    confirm: int | None = option("after the search, draw this many samples (e.g. 50000) at each setting's best "
                                 "guidance and evaluate them", None, ge=1, default_text="no confirmation")
    features: str = option("feature network of the metrics: inception (ADM's) or digits (demo.py's digits; "
                           "its metrics are named Digits FID, ...)", "inception", choices=FEATURES)
    inception_graph: str | None = option(f"path to {GRAPH_NAME}", None, default_text="cached copy, downloaded once",
                                         path=True)
    cfg_start_step: int = option("first guided step, counted over all scales", DEFAULT_CFG_START_STEP, ge=0)
    temperature: float = option("sampling temperature (0: argmax)", 1.0, ge=0, float32=True)
    seed: int = option("sample i of every point draws from a generator seeded with seed*1000003+i", 0, ge=0,
                       le=MAX_SEED)
    use_ema: bool = option("sample with the checkpoints' model_ema weights", False)
    batch_size: int = option("samples per generate() call and process", 32, ge=1)
    eval_batch_size: int = option("images per forward pass of the feature network", 64, ge=1)
    shard_size: int = option("samples per resumable shard", 1000, ge=1)
    keep_samples: bool = option("keep each point's samples.npz after its evaluation (--no-keep_samples removes "
                                "it once its row is written: 10k ImageNet samples take 2 GB)", True)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    precision: str = option("fp32 or bf16 sampling", "fp32", choices=("fp32", "bf16"))
    compile: bool = option("compiled sampling steps (CUDA graphs on a GPU)", False)
    max_points: int | None = option("stop after evaluating this many new points (tests resumption)", None, ge=1,
                                    hidden=True)

    def validate(self) -> None:
        recheck(self)
        if not self.checkpoint:
            raise ValueError("--checkpoint: no model given")
        self.cfg_values()
        self.steps_settings()
        if self.confirm is not None and self.confirm <= self.num_samples:
            raise ValueError(f"--confirm {self.confirm} must be larger than --num_samples {self.num_samples} "
                             f"(it reruns the best guidance with more samples)")
        if self.inception_graph is not None and self.features != "inception":
            raise ValueError(f"--inception_graph is for --features inception, not {self.features}")

    def check_paths(self) -> None:
        """The files it names: a reference that is there, an output folder that is no file."""
        if not os.path.exists(self.reference):
            raise FileNotFoundError(f"--reference {self.reference} not found")
        if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
            raise ValueError(f"--output_dir {self.output_dir} is a file, not a folder")
        if os.path.isdir(self.reference):  # its plots are images, and a rerun reads the reference again
            check_outside(self.output_dir, "--output_dir", self.reference, "--reference")

    def cfg_values(self) -> list[float]:
        return cfg_values(self.cfg)

    def steps_settings(self) -> list:
        return steps_settings(self.steps_per_scale)

    def sample_config(self, checkpoint: str, output_dir: str | None = None, **point) -> SampleConfig:
        """The sampling run of one point (FID mode: class-balanced labels)."""
        return SampleConfig(checkpoint=checkpoint, output_dir=output_dir, use_ema=self.use_ema,
                            cfg_start_step=self.cfg_start_step, temperature=self.temperature, seed=self.seed,
                            fid=True, batch_size=self.batch_size, shard_size=self.shard_size, device=self.device,
                            precision=self.precision, compile=self.compile, **point)
