"""Evaluate a VQ autoencoder: reconstruction PSNR per latent scale (quantized and not) and
codebook usage / perplexity.

    python train_ae_codebook/main_evaluate_ae.py --autoenc_dir pretrained_models/autoenc \\
        --data_path /data/imagenet/val --max_images 5000 --output_file ae_eval.json
"""
import argparse
import json
import sys
from pathlib import Path

# Run as `python train_ae_codebook/main_evaluate_ae.py`: the repository root holds `models`.

import torch
from torch.utils.data import DataLoader, Subset

from common.files import atomic_write_text
from models.autoencoder import load_autoencoder
from models.checkerboard import scale_sizes
from train_ae_codebook.autoencoder_files import CHECKPOINT_NAME, CONFIG_NAME
from train_ae_codebook.evaluation import evaluate_autoencoder
from train_ae_codebook.images import ImageFiles


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Reconstruction PSNR per scale and codebook usage of a VQ autoencoder",
                                prog="main_evaluate_ae.py")
    p.add_argument("--autoenc_dir", help=f"folder with {CONFIG_NAME} and {CHECKPOINT_NAME}")
    p.add_argument("--config", help=f"autoencoder config (default: <autoenc_dir>/{CONFIG_NAME})")
    p.add_argument("--checkpoint", help=f"autoencoder checkpoint (default: <autoenc_dir>/{CHECKPOINT_NAME})")
    p.add_argument("--data_path", required=True, help="folder searched recursively for images")
    p.add_argument("--img_size", type=int, help="image size (default: the config's resolution)")
    p.add_argument("--scales", help="comma-separated latent sizes (default: ratio-2 pyramid down to 1)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_images", type=int, help="evaluate the first N images (sorted by path)")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output_file", help="also write the results as JSON here")
    return p


def parse_scales(text: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise ValueError(f"--scales must be comma-separated integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise ValueError(f"--scales must be positive integers, got {text!r}")
    return sizes


def evaluate(args) -> dict:
    if args.batch_size < 1 or (args.max_images is not None and args.max_images < 1):
        raise ValueError("--batch_size and --max_images must be >= 1")
    folder = Path(args.autoenc_dir) if args.autoenc_dir else None
    config = args.config or (folder / CONFIG_NAME if folder else None)
    checkpoint = args.checkpoint or (folder / CHECKPOINT_NAME if folder else None)
    if config is None or checkpoint is None:
        raise ValueError("give --autoenc_dir, or both --config and --checkpoint")
    model = load_autoencoder(config, checkpoint).to(args.device)
    img_size = args.img_size or model.config.resolution
    if img_size % model.stride:
        raise ValueError(f"--img_size {img_size} is not a multiple of the autoencoder stride {model.stride}")
    grid = img_size // model.stride
    sizes = parse_scales(args.scales) if args.scales else scale_sizes(grid, 2.0)
    if sizes[-1] != grid:
        raise ValueError(f"the largest scale must be img_size / stride = {grid}, got {sizes[-1]}")
    dataset = ImageFiles(args.data_path, img_size)
    if args.max_images is not None:
        dataset = Subset(dataset, range(min(args.max_images, len(dataset))))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers)
    return evaluate_autoencoder(model, loader, sizes, args.device)


def format_table(results: dict) -> str:
    lines = [f"{'scale':>5} {'pixels':>6} {'PSNR':>7} {'PSNR no VQ':>10} {'usage':>6} {'perplexity':>10}"]
    for r in results["scales"]:
        lines.append(f"{r['size']:>5} {r['image_size']:>6} {r['psnr']:>7.2f} {r['psnr_unquantized']:>10.2f} "
                     f"{r['codebook_usage']:>6.3f} {r['perplexity']:>10.1f}")
    lines.append(f"all scales: codebook usage {results['codebook_usage']:.3f}, perplexity "
                 f"{results['perplexity']:.1f}, {results['num_images']} images")
    return "\n".join(lines)


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        results = evaluate(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    print(format_table(results))
    if args.output_file:
        atomic_write_text(args.output_file, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
