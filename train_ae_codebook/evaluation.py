"""Autoencoder evaluation: reconstruction PSNR per latent scale (with and without the
quantizer) and codebook usage / perplexity per scale and over all scales."""
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from common.config import option, recheck
from common.distributed import resolve_device
from models.autoencoder import VQModel, load_autoencoder
from models.checkerboard import scale_sizes

from .autoencoder_files import CHECKPOINT_NAME, CONFIG_NAME
from .codebook import perplexity
from .images import ImageFiles, image_at_scale


@dataclass
class AEEvalConfig:
    data_path: str = option("folder searched recursively for images", path=True)
    autoenc_dir: str | None = option(f"folder with {CONFIG_NAME} and {CHECKPOINT_NAME}", None, path=True)
    config: str | None = option("autoencoder config", None, default_text=f"<autoenc_dir>/{CONFIG_NAME}", path=True)
    checkpoint: str | None = option("autoencoder checkpoint", None, default_text=f"<autoenc_dir>/{CHECKPOINT_NAME}",
                                    path=True)
    img_size: int | None = option("image size", None, ge=1, default_text="the config's resolution")
    scales: list[int] | None = option("comma-separated latent sizes; the largest must be img_size / stride", None,
                                      ge=1, default_text="the ratio-2 pyramid down to 1")
    batch_size: int = option("images per batch", 32, ge=1)
    max_images: int | None = option("evaluate the first N images (sorted by path)", None, ge=1,
                                    default_text="all")
    num_workers: int = option("data loader worker processes", 4, ge=0)
    device: str | None = option("cuda, cuda:N or cpu", None, default_text="cuda when available")
    output_file: str | None = option("also write the results as JSON to this new file", None, path=True)

    def validate(self):
        recheck(self)
        if self.autoenc_dir is None and (self.config is None or self.checkpoint is None):
            raise ValueError("give --autoenc_dir, or both --config and --checkpoint")


def evaluate_files(config: AEEvalConfig) -> dict:
    """The evaluation of `config.data_path`'s images with the autoencoder the config names."""
    config.validate()
    device = resolve_device(config.device)
    folder = Path(config.autoenc_dir) if config.autoenc_dir else None
    model = load_autoencoder(config.config or folder / CONFIG_NAME, config.checkpoint or folder / CHECKPOINT_NAME)
    model = model.to(device)
    img_size = config.img_size or model.config.resolution
    if img_size % model.stride:
        raise ValueError(f"--img_size {img_size} is not a multiple of the autoencoder stride {model.stride}")
    grid = img_size // model.stride
    sizes = sorted(set(config.scales)) if config.scales else scale_sizes(grid, 2.0)
    if sizes[-1] != grid:
        raise ValueError(f"the largest scale must be img_size / stride = {grid}, got {sizes[-1]}")
    dataset = ImageFiles(config.data_path, img_size)
    if config.max_images is not None:
        dataset = Subset(dataset, range(min(config.max_images, len(dataset))))
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.num_workers)
    return evaluate_autoencoder(model, loader, sizes, device)


def psnr(reconstruction, target):
    """Per-image PSNR (B,) in dB of images in [-1, 1]; the reconstruction is clamped to that range."""
    err = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)  # (B,) MSE on [0, 1] pixels
    return -10 * torch.log10(err)


@torch.no_grad()
def evaluate_autoencoder(model: VQModel, batches, scale_sizes, device="cpu") -> dict:
    """`batches` yields (B, 3, H, W) images in [-1, 1] with H = W = max(scale_sizes) * stride.

    Every scale sees the image resized as the generator's pyramid does (docs/method.md §3) and compares
    the reconstruction with that resized image. PSNR is averaged over images."""
    model.eval()
    n_embed = model.config.n_embed
    sizes = sorted(scale_sizes)
    psnr_q = {s: 0.0 for s in sizes}
    psnr_raw = {s: 0.0 for s in sizes}
    counts = {s: torch.zeros(n_embed, device=device) for s in sizes}
    num_images = 0
    for imgs in batches:
        imgs = imgs.to(device)
        if imgs.shape[-1] != sizes[-1] * model.stride:
            raise ValueError(f"images are {imgs.shape[-1]} px, the largest scale {sizes[-1]} needs "
                             f"{sizes[-1] * model.stride} px")
        num_images += imgs.shape[0]
        for s in sizes:
            x = image_at_scale(imgs, s, model.stride)
            z = model.encode(x)
            zq, indices = model.quantize_latents(z)
            psnr_q[s] += psnr(model.decode(zq), x).sum()
            psnr_raw[s] += psnr(model.decode(z), x).sum()
            counts[s] += torch.bincount(indices.flatten(), minlength=n_embed)
    if num_images == 0:
        raise ValueError("no images to evaluate")
    total = sum(counts.values())
    return {
        "num_images": num_images,
        "scales": [{"size": s, "image_size": s * model.stride,
                    "psnr": float(psnr_q[s]) / num_images,
                    "psnr_unquantized": float(psnr_raw[s]) / num_images,
                    "codebook_usage": float((counts[s] > 0).float().mean()),
                    "perplexity": float(perplexity(counts[s]))} for s in sizes],
        "codebook_usage": float((total > 0).float().mean()),
        "perplexity": float(perplexity(total)),
    }
