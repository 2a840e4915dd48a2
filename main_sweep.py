"""The paper's guidance sweep: sample and evaluate every model x steps per scale x guidance weight, keep the best.

    python main_sweep.py --checkpoint pretrained_models/checkerboard-L-2x --cfg 1.0:2.0:0.1 \
        --steps_per_scale 4 --num_samples 10000 --reference VIRTUAL_imagenet256_labeled.npz \
        --output_dir sweeps/l2x --confirm 50000
    torchrun --nproc_per_node=8 main_sweep.py ...        # every process samples its share

Writes results.csv/.json (a row per point), best_guidance.md/.csv and the Fig. 4a/5 plots into
--output_dir, after every point; rerun the same command to continue an interrupted sweep. The
library is sweep/ (run.py's `run_sweep`); this script parses the command line and calls it.
"""
import datetime
import sys

from common.cli import one_line_errors
from common.config import ArgumentParser, add_arguments, command_line, given_options, make
from common.distributed import cleanup, init_distributed
from sweep.config import SweepConfig
from sweep.run import run_sweep

PROG = "main_sweep.py"
# Process 0 evaluates each point (50,000 images through Inception: minutes) while the others wait
# at a barrier, longer than torch's default timeout of collectives allows.
EVALUATION_WAIT = datetime.timedelta(hours=2)


def get_args_parser() -> ArgumentParser:
    p = ArgumentParser(PROG, description=__doc__.split("\n\n")[0])
    return add_arguments(p, SweepConfig)


def main(argv=None) -> int:
    values = given_options(get_args_parser(), argv)
    with one_line_errors(PROG):
        config = make(SweepConfig, command_line(values))
        rank, _, device = init_distributed(config.device, timeout=EVALUATION_WAIT)
        try:
            outputs = run_sweep(config, device)
        finally:
            cleanup()
    if rank == 0:
        done = f"{len(outputs.evaluated)} points evaluated, {len(outputs.skipped)} found evaluated before"
        if outputs.stopped:
            print(f"stopped after --max_points {config.max_points} ({done}); rerun to continue")
        else:
            print(f"{done}; {len(outputs.rows)} rows in {outputs.folder / 'results.csv'}, best guidance in "
                  f"{outputs.folder / 'best_guidance.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
