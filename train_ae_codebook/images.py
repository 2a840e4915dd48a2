"""Image folders as training batches: a fixed, resumable order and the per-scale resize."""
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler

from common.images import IMAGE_EXTENSIONS, list_images, load_rgb


class ImageFiles(Dataset):
    """Every image under `root` (any folder structure), resized on the short side and
    centre-cropped to `img_size`, as (3, img_size, img_size) floats in [-1, 1]."""

    def __init__(self, root, img_size: int):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"data folder not found: {root}")
        self.files = list_images(root)
        if not self.files:
            raise ValueError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        self.img_size = img_size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = center_square(load_rgb(self.files[i]), self.img_size)  # ImageError names a bad file
        pixels = torch.from_numpy(np.asarray(img, dtype=np.float32))  # (H, W, 3) in [0, 255]
        return (pixels / 127.5 - 1).permute(2, 0, 1)


def center_square(img: Image.Image, size: int) -> Image.Image:
    """Short side resized to `size` (bicubic), then the centre `size` x `size` crop."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        left, top = (img.width - size) // 2, (img.height - size) // 2
        img = img.crop((left, top, left + size, top + size))
    return img


def step_seed(seed: int, purpose: str, step: int) -> int:
    """A seed that depends only on (seed, purpose, step): every random choice of a step can be
    redone after a resume without saving generator states."""
    return int(np.random.SeedSequence([seed, int.from_bytes(purpose.encode(), "little"), step]).generate_state(1)[0])


class StepBatches(Sampler):
    """Batch `step` holds the images at positions [step*B, (step+1)*B) of the concatenated
    per-epoch permutations, so a run resumed at any step sees the same batches as an
    uninterrupted one."""

    def __init__(self, num_images: int, batch_size: int, seed: int, start_step: int, total_steps: int):
        self.n, self.batch_size, self.seed = num_images, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng(step_seed(self.seed, "data", epoch)).permutation(self.n)

    def __len__(self):
        return max(0, self.total_steps - self.start_step)

    def __iter__(self):
        position = self.start_step * self.batch_size
        epoch, order = None, None
        for _ in range(len(self)):
            batch = []
            while len(batch) < self.batch_size:
                if epoch != position // self.n:
                    epoch = position // self.n
                    order = self._permutation(epoch)
                take = min(self.batch_size - len(batch), self.n - position % self.n)
                batch.extend(order[position % self.n: position % self.n + take].tolist())
                position += take
            yield batch


def image_at_scale(imgs, size: int, stride: int):
    """The image seen by latent scale `size`: resized as VQModel.quantize_pyramid does (docs/method.md §3),
    the full size passed as is."""
    if imgs.shape[-1] == size * stride:
        return imgs
    return F.interpolate(imgs, size=(size * stride, size * stride), mode="bilinear",
                         align_corners=False, antialias=False)


def latent_sizes(img_size: int, min_size: int, stride: int) -> range:
    """Latent sizes a training step may draw: images from `min_size` (rounded up to a whole
    latent) to `img_size` pixels."""
    if img_size % stride:
        raise ValueError(f"img_size {img_size} is not a multiple of the autoencoder stride {stride}")
    if min_size > img_size:
        raise ValueError(f"min_size {min_size} is larger than img_size {img_size}")
    return range(max(1, -(-min_size // stride)), img_size // stride + 1)


def draw_latent_size(sizes: range, seed: int, step: int) -> int:
    return int(np.random.default_rng(step_seed(seed, "scale", step)).integers(sizes.start, sizes.stop))
