"""Train a progressive checkerboard generator from a YAML config.

    python main.py --config configs/config_256_S.yaml --data_path /data/imagenet --output_dir runs/S
    torchrun --nproc_per_node=8 main.py --config configs/config_256_S.yaml --data_path ... --output_dir ...
    python main.py --config ... --data_path ... --create_cache          # encode the ten-crop token cache
    python main.py --config ... --data_path ... --use_cache --output_dir ...
    python main.py --resume runs/S --epochs 120                          # continue a run

Every key of the config's `args:` section is an option here (the published names; `--help` lists them
with their defaults) and the command line wins; an unknown key is an error. Other scripts call
`TrainConfig.load(...)` and `train(config)` directly.
"""
import logging

from common.cli import EXIT_BAD_INPUT, EXIT_FAILED, fail, interrupt_line, one_line_errors, out_of_memory_line
from common.config import ArgumentParser, add_arguments, given_options
from common.distributed import launched_rank
from models.checkpoint import width_text
from models.checkpoint_format import LAST
from training.config import TrainConfig
from training.engine import NoTrainingStepError, NonFiniteLossError, train


__all__ = ["get_args_parser", "parse_config", "TrainConfig", "train", "main"]

PROG = "main.py"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(PROG, description="Train a progressive checkerboard generator.")
    return add_arguments(parser, TrainConfig)


def parse_config(argv=None, parser=None) -> TrainConfig:
    """TrainConfig from the config file's `args:` and the options given in `argv`."""
    overrides = given_options(parser or get_args_parser(), argv)
    return TrainConfig.load(overrides.pop("config", None), command_line=True, **overrides)


def how_to_go_on(runs: list) -> str:
    """After Ctrl-C: the command that resumes the run, if it has a checkpoint."""
    if not runs:
        return "training had not started; rerun the command to start it"
    folder = runs[0].output_dir
    if (folder / LAST).is_file():
        return f"resume with: python {PROG} --resume {folder}"
    return f"no checkpoint was written yet in {folder}: rerun the same command to start again"


def main(argv=None):
    parser = get_args_parser()
    with one_line_errors(PROG, EXIT_BAD_INPUT):
        config = parse_config(argv, parser)
    # Processes other than 0 log only what goes wrong.
    logging.basicConfig(level=logging.INFO if launched_rank() == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    runs = []  # the run once set up: what Ctrl-C leaves to resume
    sizes = lambda: f"{width_text(config.config)} and batch_size {config.batch_size} per process"  # noqa: E731
    with interrupt_line(PROG, lambda: how_to_go_on(runs)), out_of_memory_line(PROG, sizes):
        try:
            train(config, on_start=runs.append)
        except (ValueError, OSError, NonFiniteLossError, NoTrainingStepError) as e:
            # Before the run was set up, the inputs were wrong; after it, they were fine and the run failed
            # (a non-finite loss, a full disk): it stops with the epochs logged so far and names the
            # checkpoint it leaves.
            fail(PROG, e, EXIT_FAILED if runs else EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
