"""Evaluation during training: a sample grid, and FID / IS with torch-fidelity against reference images.

torch-fidelity's Inception weights are read from disk only (training machines may have no internet):
without them FID/IS is skipped with one warning and training goes on. The numbers are torch-fidelity's,
for tracking progress; the reported ADM metrics come from evaluator.py.
"""
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common import npz
from common.distributed import barrier
from common.files import atomic_write
from common.images import IMAGE_EXTENSIONS, list_images, load_rgb_array
from models.sampler import Sampler
from sampling.config import DEFAULT_CFG, DEFAULT_CFG_START_STEP, SampleConfig
from sampling.figures import image_grid, save_png
from sampling.plan import draw_images, plan_for

log = logging.getLogger(__name__)

INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def default_inception_weights() -> Path:
    """Where torch-fidelity keeps its downloaded Inception weights (torch hub's checkpoints folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE


@dataclass(frozen=True)
class SampleSettings:
    cfg: float = DEFAULT_CFG
    cfg_start_step: int = DEFAULT_CFG_START_STEP
    steps_per_scale: int = 4
    temperature: float = 1.0
    seed: int = 0
    batch_size: int = 64

    def sample_config(self, num_classes: int | None) -> SampleConfig:
        """main_sample.py's config of these samples: sample i has class i % num_classes (FID mode's
        labels, for any count), an unconditional model none and no guidance."""
        return SampleConfig(cfg=self.cfg if num_classes else 0.0, cfg_start_step=self.cfg_start_step,
                            steps_per_scale=self.steps_per_scale, temperature=self.temperature, seed=self.seed,
                            classes=list(range(num_classes)) if num_classes else None, batch_size=self.batch_size)


@torch.no_grad()
def sample_images(generator, indices: list[int], settings: SampleSettings, device) -> np.ndarray:
    """uint8 (n, H, W, 3) samples: sample i is main_sample.py's sample i with these settings and --fid
    (sampling/plan.py draws both), whatever the batches or processes the indices are split among."""
    config = settings.sample_config(generator.config.num_classes if generator.config.class_cond else None)
    plan = plan_for(config, generator)
    return draw_images(Sampler(generator), plan, indices, settings.batch_size, device)[0]


class UInt8Images(Dataset):
    """(N, H, W, 3) uint8 arrays as torch-fidelity inputs (3, H, W)."""

    def __init__(self, arrays: list):
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, i):
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        image = np.array(self.arrays[k][i - self.starts[k]])  # a copy: the arrays are read-only maps
        return torch.from_numpy(image).permute(2, 0, 1)


class NpzImages(Dataset):
    """The `arr_0` images (N, H, W, 3) uint8 of an ADM-style .npz, read only when an item is asked for:
    once torch-fidelity has cached the reference statistics, later evaluations never load the file."""

    def __init__(self, path: Path):
        self.path, self.images = path, None
        try:
            self.length = npz.array_header(path, "arr_0").shape[0]
        except ValueError:
            raise ValueError(f"{path}: not an .npz with an arr_0 array of reference images") from None

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        if self.images is None:
            self.images = npz.read_array(self.path, "arr_0")
        return torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)


class FolderImages(Dataset):
    """The images of a folder (common/images.py: any depth, 8-bit RGB) as uint8 (3, H, W)."""

    def __init__(self, path: Path):
        self.files = list_images(path)
        if not self.files:
            raise ValueError(f"{path}: no reference images ({', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        return torch.from_numpy(load_rgb_array(self.files[i]).copy()).permute(2, 0, 1)


def reference_input(path: Path) -> Dataset:
    """torch-fidelity's input2: the images of a folder or of an ADM-style .npz (arr_0)."""
    return NpzImages(path) if path.suffix == ".npz" else FolderImages(path)


class InlineEvaluator:
    """The sample grid (guidance `guidance[0]`) and, for each guidance value, FID/IS of `num_samples`
    samples (metrics `fid`, `inception_score`; with several values, suffixed `_cfg<value>`). The samples
    are written per process to <samples_dir>/samples_ep<epoch>_cfg<value>/rank<r>.npy and removed after
    unless `keep_samples`; `samples_only` draws them and computes nothing."""

    def __init__(self, output_dir, settings: SampleSettings, num_samples: int, grid_samples: int,
                 reference=None, inception_weights=None, rank: int = 0, world_size: int = 1,
                 guidance: tuple | None = None, samples_dir=None, keep_samples: bool = False,
                 samples_only: bool = False):
        self.output_dir = Path(output_dir)
        self.settings, self.num_samples, self.grid_samples = settings, num_samples, grid_samples
        self.guidance = tuple(guidance) if guidance else (settings.cfg,)
        self.samples_dir = Path(samples_dir) if samples_dir else self.output_dir
        self.keep_samples, self.samples_only = keep_samples, samples_only
        self.rank, self.world_size = rank, world_size
        self.reference = Path(reference) if reference else None
        if self.reference is not None and not self.reference.exists():
            raise FileNotFoundError(f"eval_reference_data_path not found: {self.reference}")
        if self.reference is not None:
            reference_input(self.reference)  # a malformed .npz fails now, not at the first evaluation
        if inception_weights and not Path(inception_weights).is_file():
            raise FileNotFoundError(f"eval_inception_weights not found: {inception_weights}")
        self.inception_weights = Path(inception_weights) if inception_weights else default_inception_weights()
        self.warned = False

    @property
    def fid_wanted(self) -> bool:
        return self.reference is not None and self.num_samples > 0 and not self.samples_only

    def fid_ready(self) -> bool:
        """True when FID/IS can run; warns once (process 0) when the weights are missing."""
        if not self.fid_wanted:
            return False
        if self.inception_weights.is_file():
            return True
        if not self.warned and self.rank == 0:
            log.warning("inline FID/IS skipped: torch-fidelity Inception weights not found at %s (copy %s there "
                        "or pass --eval_inception_weights); training continues",
                        self.inception_weights, INCEPTION_WEIGHTS_FILE)
        self.warned = True
        return False

    def __call__(self, generator, epoch: int, device) -> tuple[dict, torch.Tensor | None]:
        """(metrics, grid image (3, H, W) in [0, 1] on process 0, else None). `generator` in eval mode,
        with its decoder on `device`."""
        grid = None
        if self.rank == 0 and self.grid_samples > 0:
            tiles = image_grid(sample_images(generator, list(range(self.grid_samples)), self.settings, device))
            folder = self.output_dir / "samples"
            folder.mkdir(exist_ok=True)
            save_png(tiles, folder / f"epoch-{epoch}.png")
            grid = torch.from_numpy(tiles).permute(2, 0, 1).float() / 255  # (3, H, W)
        metrics = {}
        compute = self.fid_ready()
        if compute or (self.samples_only and self.num_samples > 0):
            for cfg in self.guidance:
                values = self._samples_and_metrics(generator, epoch, cfg, device, compute)
                suffix = "" if len(self.guidance) == 1 else f"_cfg{cfg:g}"
                metrics.update({f"{name}{suffix}": value for name, value in values.items()})
        return metrics, grid

    def _samples_and_metrics(self, generator, epoch, cfg, device, compute: bool) -> dict:
        folder = self.samples_dir / f"samples_ep{epoch:03d}_cfg{cfg:.2f}"
        made = False
        if self.rank == 0:
            made = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
        barrier()
        mine = list(range(self.rank, self.num_samples, self.world_size))
        images = sample_images(generator, mine, replace(self.settings, cfg=cfg), device)
        atomic_write(self._rank_file(folder, self.rank), lambda f: np.save(f, images))
        barrier()
        metrics = {}
        if self.rank == 0:
            if compute:
                metrics = self._fidelity(folder, device)
            if not self.keep_samples:
                # Only what this evaluation wrote: the folder may hold the user's files too.
                for r in range(self.world_size):
                    self._rank_file(folder, r).unlink()
                if made and not any(folder.iterdir()):
                    folder.rmdir()
        barrier()
        return metrics

    @staticmethod
    def _rank_file(folder: Path, rank: int) -> Path:
        return folder / f"rank{rank}.npy"

    def _fidelity(self, folder: Path, device) -> dict:
        import torch_fidelity

        arrays = [npz.read_npy(self._rank_file(folder, r), mmap=True) for r in range(self.world_size)]
        key = f"{self.reference.resolve()}:{self.reference.stat().st_mtime_ns}"
        result = torch_fidelity.calculate_metrics(
            input1=UInt8Images(arrays), input2=reference_input(self.reference), cuda=device.type == "cuda",
            fid=True, isc=True, verbose=False,
            feature_extractor_weights_path=str(self.inception_weights),
            input2_cache_name=f"checkerboard-ref-{hashlib.sha1(key.encode()).hexdigest()[:16]}")
        return {"fid": float(result["frechet_inception_distance"]),
                "inception_score": float(result["inception_score_mean"])}
