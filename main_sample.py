"""Sample a trained checkerboard generator: sample grids and figures, or 50k images for FID.

    python main_sample.py --checkpoint pretrained_models/checkerboard-L-2x --cfg 1.5 \
        --classes 207,360,387,974 --num_samples 8 --output_dir samples/look --save_fill
    torchrun --nproc_per_node=8 main_sample.py --checkpoint ... --cfg 1.5 --fid --output_dir samples/fid

Writes `output_dir/samples.npz` (ADM layout: arr_0 uint8 (N, H, W, 3), arr_1 labels), `grid.png`,
the figures asked for and `sampling.json` (the settings). The library is sampling/ (run.py's
`sample`); this script parses the command line and calls it.
"""
import shlex
import sys

from common.cli import interrupt_line, one_line_errors, out_of_memory_line
from common.config import ArgumentParser, add_arguments, command_line, given_options, make
from common.distributed import cleanup, init_distributed, resolve_device
from models.checkpoint import checkpoint_paths, width_text
from sampling.config import SampleConfig
from sampling.flops import flops_per_sample
from sampling.run import load_for_sampling, sample

PROG = "main_sample.py"


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description=__doc__.split("\n\n")[0])
    add_arguments(p, SampleConfig)
    p.add_argument("--calculate_flops", action="store_true", help="print the GFLOPs of one sample and exit")
    return p


def sizes(config: SampleConfig) -> str:
    try:
        width = width_text(checkpoint_paths(config.checkpoint)[1])
    except (OSError, TypeError):
        width = "this model"
    return f"{width} and --batch_size {config.batch_size}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    values = given_options(get_args_parser(), argv)
    calculate_flops = values.pop("calculate_flops", False)
    with one_line_errors(PROG):
        config = make(SampleConfig, command_line(values))
    def go_on():  # finished shards are kept: the same command draws only the missing ones
        return f"the finished shards in {config.output_dir} are kept; resume with: python {PROG} {shlex.join(argv)}"

    with interrupt_line(PROG, go_on), out_of_memory_line(PROG, lambda: sizes(config)):
        return run(config, calculate_flops)


def run(config: SampleConfig, calculate_flops: bool) -> int:
    with one_line_errors(PROG):
        if calculate_flops:
            device = resolve_device(config.device)
            print(f"GFLOPs per sample: {flops_per_sample(load_for_sampling(config, device), config, device) / 1e9:.3f}")
            return 0
        rank, _, device = init_distributed(config.device)
        try:
            outputs = sample(config, device=device)
        finally:
            cleanup()
    if outputs is None:
        print(f"stopped after --max_shards {config.max_shards}; rerun to resume")
    elif rank == 0 and outputs.finished_before:
        print(f"{config.output_dir} holds this run's finished samples already ({outputs.samples_npz}); nothing to do")
    elif rank == 0:
        for path in (outputs.samples_npz, outputs.grid_png, *outputs.figures.values()):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
