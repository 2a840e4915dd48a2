"""Autoencoder evaluation: reconstruction PSNR per latent scale (with and without the
quantizer) and codebook usage / perplexity per scale and over all scales."""
import torch

from models.autoencoder import VQModel

from .codebook import perplexity
from .images import image_at_scale


def psnr(reconstruction, target):
    """Per-image PSNR (B,) in dB of images in [-1, 1]; the reconstruction is clamped to that range."""
    err = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)  # (B,) MSE on [0, 1] pixels
    return -10 * torch.log10(err)


@torch.no_grad()
def evaluate_autoencoder(model: VQModel, batches, scale_sizes, device="cpu") -> dict:
    """`batches` yields (B, 3, H, W) images in [-1, 1] with H = W = max(scale_sizes) * stride.

    Every scale sees the image resized as the generator's pyramid does (SPEC 3) and compares
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
