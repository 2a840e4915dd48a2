"""Requantize a VQ autoencoder's codebook, or train a small autoencoder from scratch.

Requantization (LlamaGen's VQ-16 -> the published multiscale codebook):
    python train_ae_codebook/main_train_ae.py --config train_ae_codebook/autoencoder_config.yaml \\
        --data_path /data/imagenet/train --init_checkpoint vq_ds16_c2i.pt --output_dir pretrained_models/autoenc
From scratch on a small dataset (settings from the config's `args:` section):
    python train_ae_codebook/main_train_ae.py --config train_ae_codebook/autoencoder_config_digits.yaml \\
        --data_path digits/train --output_dir out/autoenc_digits

Options left out take their value from the config's `args:` section, then from AETrainConfig's defaults
(`--help` shows them).
Writes <output_dir>/autoencoder_config.yaml + checkpoint.pth; rerunning resumes from
<output_dir>/checkpoint-last.pth.
"""
from common.cli import EXIT_FAILED, one_line_errors
from common.config import ArgumentParser, add_arguments, expand_path, given_options
from models.checkpoint_format import read_config
from train_ae_codebook.train_config import AETrainConfig, make_config
from train_ae_codebook.training import AutoencoderRun

PROG = "main_train_ae.py"


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description="Requantize a VQ autoencoder's codebook or train one from scratch")
    p.add_argument("--config", required=True, metavar="FILE", type=expand_path,
                   help="autoencoder_config.yaml (model.params; its optional args: section sets defaults)")
    return add_arguments(p, AETrainConfig)


def main(argv=None):
    values = given_options(get_args_parser(), argv)
    config_path = values.pop("config")
    with one_line_errors(PROG):
        _, yaml_args = read_config(config_path)
        config = make_config(config_path, yaml_args, values, command_line=True)
        run = AutoencoderRun(config)  # every check: nothing is written before it passes
        run.start()
    # From here the inputs were fine: a failure (a full disk) is the run's, and checkpoint-last.pth keeps
    # the last saved step.
    with one_line_errors(PROG, EXIT_FAILED):
        output_dir = run.train()
    print(f"wrote {output_dir / 'autoencoder_config.yaml'} and {output_dir / 'checkpoint.pth'}")


if __name__ == "__main__":
    main()
