"""Requantize a VQ autoencoder's codebook, or train a small autoencoder from scratch.

Requantization (LlamaGen's VQ-16 -> the published multiscale codebook):
    python train_ae_codebook/main_train_ae.py --config train_ae_codebook/autoencoder_config.yaml \\
        --data_path /data/imagenet/train --init_checkpoint vq_ds16_c2i.pt --output_dir pretrained_models/autoenc
From scratch on a small dataset (settings from the config's `args:` section):
    python train_ae_codebook/main_train_ae.py --config train_ae_codebook/autoencoder_config_digits.yaml \\
        --data_path digits/train --output_dir out/autoenc_digits

Options left out take their value from the config's `args:` section, then from AETrainConfig.
Writes <output_dir>/autoencoder_config.yaml + checkpoint.pth; rerunning resumes from
<output_dir>/checkpoint-last.pth.
"""
import argparse
import sys

# Run as `python train_ae_codebook/main_train_ae.py`: the repository root holds `models`.

import torch
import yaml

from models.checkpoint import read_config
from train_ae_codebook.train_config import RECON_LOSSES, make_config
from train_ae_codebook.training import train_autoencoder


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Requantize a VQ autoencoder's codebook or train one from scratch",
                                prog="main_train_ae.py")
    p.add_argument("--config", required=True, help="autoencoder_config.yaml (model.params; optional args: defaults)")
    p.add_argument("--data_path", help="folder searched recursively for images")
    p.add_argument("--output_dir", help="where autoencoder_config.yaml, checkpoint.pth and logs go")
    p.add_argument("--init_checkpoint", help="LlamaGen vq_ds16_c2i.pt (or one of our checkpoint.pth): encoder/decoder "
                                             "weights; its codebook is ignored. Required unless --train_all")
    p.add_argument("--train_all", action=argparse.BooleanOptionalAction, default=None,
                   help="train encoder, decoder and codebook (small datasets) instead of the codebook alone")
    p.add_argument("--n_embed", type=int, help="codebook size (default: the config's)")
    p.add_argument("--img_size", type=int, help="largest image size in pixels (default: the config's resolution)")
    p.add_argument("--min_size", type=int, help="smallest image size in pixels drawn for a step (default 16)")
    p.add_argument("--batch_size", type=int)
    p.add_argument("--epochs", type=float)
    p.add_argument("--init_steps", type=int, help="steps gathering latent statistics before the codebook init")
    p.add_argument("--lr", type=float, help="peak learning rate, cosine-decayed after init_steps")
    p.add_argument("--weight_decay", type=float)
    p.add_argument("--commitment_weight", type=float)
    p.add_argument("--codebook_weight", type=float)
    p.add_argument("--dead_code_interval", type=int, help="steps between re-initialisations of unused codes")
    p.add_argument("--recon_loss", choices=RECON_LOSSES, help="reconstruction loss with --train_all")
    p.add_argument("--perceptual_weights", help="local torchvision VGG16 weights: adds a perceptual loss (--train_all)")
    p.add_argument("--perceptual_weight", type=float)
    p.add_argument("--log_every", type=int)
    p.add_argument("--save_every", type=int)
    p.add_argument("--num_workers", type=int)
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--seed", type=int)
    p.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="write tensorboard events to output_dir")
    return p


def main(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    try:
        _, yaml_args = read_config(args.config)
        overrides = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
        if "device" not in overrides and "device" not in yaml_args:
            overrides["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        output_dir = train_autoencoder(make_config(args.config, yaml_args, overrides))
    except (ValueError, FileNotFoundError, yaml.YAMLError) as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {output_dir / 'autoencoder_config.yaml'} and {output_dir / 'checkpoint.pth'}")


if __name__ == "__main__":
    main()
