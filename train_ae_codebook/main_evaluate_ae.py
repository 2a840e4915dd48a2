"""Evaluate a VQ autoencoder: reconstruction PSNR per latent scale (quantized and not) and
codebook usage / perplexity.

    python train_ae_codebook/main_evaluate_ae.py --autoenc_dir pretrained_models/autoenc \\
        --data_path /data/imagenet/val --max_images 5000 --output_file ae_eval.json
"""
import json
import sys
from pathlib import Path

from common.cli import EXIT_FAILED, one_line_errors
from common.config import ArgumentParser, add_arguments, command_line, given_options, make
from common.files import check_new_file, new_file_text
from train_ae_codebook.evaluation import AEEvalConfig, evaluate_files

PROG = "main_evaluate_ae.py"


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description="Reconstruction PSNR per scale and codebook usage of a VQ autoencoder")
    return add_arguments(p, AEEvalConfig)


def format_table(results: dict) -> str:
    lines = [f"{'scale':>5} {'pixels':>6} {'PSNR':>7} {'PSNR no VQ':>10} {'usage':>6} {'perplexity':>10}"]
    for r in results["scales"]:
        lines.append(f"{r['size']:>5} {r['image_size']:>6} {r['psnr']:>7.2f} {r['psnr_unquantized']:>10.2f} "
                     f"{r['codebook_usage']:>6.3f} {r['perplexity']:>10.1f}")
    lines.append(f"all scales: codebook usage {results['codebook_usage']:.3f}, perplexity "
                 f"{results['perplexity']:.1f}, {results['num_images']} images")
    return "\n".join(lines)


def main(argv=None):
    values = given_options(get_args_parser(), argv)
    with one_line_errors(PROG):
        config = make(AEEvalConfig, command_line(values))
        if config.output_file:
            check_output_file(config.output_file)
        results = evaluate_files(config)
    print(format_table(results))
    if config.output_file:
        with one_line_errors(PROG, EXIT_FAILED):  # a full disk: the table above is printed already
            new_file_text(config.output_file, json.dumps(results, indent=2) + "\n", "--output_file")


def check_output_file(path):
    """Before the evaluation: a new file in a folder that exists."""
    path = Path(path)
    check_new_file(path, "--output_file")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--output_file {path}: folder {path.parent} not found")


if __name__ == "__main__":
    sys.exit(main())
