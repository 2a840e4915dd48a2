"""What a sampling run is asked for: `SampleConfig`, one field per main_sample.py option.

Built by main_sample.py from its command line, or in code:

    config = SampleConfig(checkpoint="pretrained_models/checkerboard-L-2x", output_dir="samples/cfg1.5",
                          cfg=1.5, fid=True)
    sample(config)                    # sampling/run.py

A config is checked where it is made (the command line's `make`, or a constructor call in code),
once: the checks that need no model. Those that need the model are sampling/plan.py's `plan_for`;
nothing between them and the draws checks again. It is frozen, so what was checked stays.
"""
from dataclasses import dataclass

from common.config import option, recheck
from models.sampler import DEFAULT_CFG_START_STEP
from sampling.seeds import MAX_SEED

# The published main_sample.py (and main_evaluate.py, and main.py's inline evaluation) guide with
# 2.0 when --cfg is not given, so a published command line that leaves it out draws the same samples
# here. The paper's FID runs use 1.5 (its run_evaluator.sh), which the README's commands pass.
DEFAULT_CFG = 2.0
# DEFAULT_CFG_START_STEP, imported above, is the sampler's own default (models/ imports nothing from
# here); the configs, scripts and training's inline evaluation take both defaults from this module.
FID_NUM_SAMPLES = 50_000  # the ADM protocol's sample count
DEFAULT_NUM_SAMPLES = 16


@dataclass(frozen=True)
class SampleConfig:
    checkpoint: str | None = option("checkpoint file or model folder (published layout, with config.yaml)", None,
                                    default_text="required; in code, it may name a model passed to sample()", path=True)
    output_dir: str | None = option("folder of this run: samples.npz, grid.png, the figures, sampling.json and "
                                    "the resumable shards", None,
                                    default_text="required, except with --calculate_flops", path=True)
    use_ema: bool = option("sample with the checkpoint's model_ema weights", False)
    cfg: float | None = option("classifier-free guidance weight (0: none)", None, ge=0, float32=True,
                               default_text=f"{DEFAULT_CFG} for a class-conditional model, as published; else 0")
    cfg_start_step: int = option("first guided step, counted over all scales", DEFAULT_CFG_START_STEP, ge=0)
    steps_per_scale: int | list[int] | None = option("sampling steps per scale: one value, or one per scale such "
                                                     "as 1,4,4,4,4", None, ge=1,
                                                     default_text="the model's num_blocks_per_scale, as published")
    temperature: float = option("sampling temperature (0: argmax)", 1.0, ge=0, float32=True)
    seed: int = option("sample i draws from a generator seeded with seed*1000003+i", 0, ge=0, le=MAX_SEED)
    classes: list[int] | None = option("comma-separated class ids, cycled over the samples", None, ge=0,
                                       default_text="random classes")
    random_classes: bool = option("a random class per sample (the default for a class-conditional model "
                                  "without --classes)", False)
    num_samples: int | None = option("how many samples", None, ge=1,
                                     default_text=f"{FID_NUM_SAMPLES} with --fid, one per --classes entry, else "
                                                  f"{DEFAULT_NUM_SAMPLES}")
    batch_size: int = option("samples per generate() call and process", 32, ge=1)
    fid: bool = option("FID mode: class-balanced labels (sample i has class i % num_classes), count checked",
                       False)
    shard_size: int = option("samples per resumable shard", 1000, ge=1)
    grid_samples: int = option("how many of the first samples grid.png shows", 64, ge=1)
    save_pyramid: bool = option("pyramid.png: the decoded image of every scale", False)
    save_fill: bool = option("checkerboard_fill.png: the cells sampled up to each step (paper Fig. 1)", False)
    save_step_maps: bool = option("step_entropy_maps.png: per-cell sampling step and entropy (paper Fig. 7)",
                                  False)
    save_entropy_plot: bool = option("entropy_per_step.png/.json: mean and quartiles of the entropy per step "
                                     "(paper Fig. 6)", False)
    vis_samples: int = option("how many of the first samples the figures show (drawn again with their trace)", 8,
                              ge=1)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    precision: str = option("fp32 (exact to the published numbers) or bf16 (faster on GPUs, logits within ~1% "
                            "of fp32)", "fp32", choices=("fp32", "bf16"))
    compile: bool = option("compiled sampling steps; on a GPU the whole generation becomes one CUDA graph per "
                           "batch shape", False)
    max_shards: int | None = option("stop after this many new shards per process (tests resumption)", None, ge=1,
                                    hidden=True)

    def __post_init__(self):
        """Checks that need no model: every field's type and bounds (a config made in code gets the
        command line's checks), then the combinations."""
        recheck(self)
        if self.classes is not None and self.random_classes:
            raise ValueError("--classes and --random_classes exclude each other")
        if self.fid and (self.classes is not None or self.random_classes):
            raise ValueError("--fid draws class-balanced labels; drop --classes/--random_classes")
        if self.classes is not None and not self.classes:
            raise ValueError("--classes is empty")

    @property
    def figures_wanted(self) -> bool:
        return self.save_pyramid or self.save_fill or self.save_step_maps or self.save_entropy_plot
