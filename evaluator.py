"""ADM evaluation (the protocol of the guided-diffusion evaluator): Inception Score, FID, sFID, precision and recall.

    python evaluator.py REF SAMPLE [--inception_graph PATH] [--output_file F] [--save_stats S]
    python evaluator.py REF SAMPLE --features digits     # demo.py's 32 px digits: Digits FID, ...

The library is the `evaluation` package; this script parses the command line and calls it.
"""
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import one_line_errors
from common.config import (ArgumentParser, add_arguments, command_line, expand_path, given_options, make,
                           option)
from common.files import check_new_file, new_file_text
from evaluation import FEATURES, evaluate, label_of_key
from evaluation.inception import GRAPH_NAME

PROG = "evaluator.py"


@dataclass
class EvaluatorConfig:
    inception_graph: str | None = option(f"path to {GRAPH_NAME}", None,
                                         default_text="cached copy, downloaded once", path=True)
    output_file: str | None = option("also write the results to this new file", None, path=True)
    batch_size: int = option("images per forward pass", 64, ge=1)
    save_stats: str | None = option("write REF's statistics (mu, sigma, mu_s, sigma_s, pool, radii, image size, "
                                    "feature network) to this new npz, usable as REF", None, path=True)
    features: str = option("feature network: inception (ADM's; numbers compare with published ones) or digits "
                           "(a classifier of demo.py's 32 px digits; its metrics are named Digits FID, ...)",
                           "inception", choices=FEATURES)
    reference_cache: str | None = option("folder where REF's statistics are kept by its content and the feature "
                                         "network, computed on the first use and read from there afterwards", None,
                                         path=True)

    def validate(self):
        if self.inception_graph is not None and self.features != "inception":
            raise ValueError(f"--inception_graph is for --features inception, not {self.features}")
        for name in ("output_file", "save_stats"):
            if getattr(self, name) is not None:
                check_new_file(getattr(self, name), f"--{name}")
        if self.reference_cache is not None and os.path.exists(self.reference_cache) and \
                not os.path.isdir(self.reference_cache):
            raise ValueError(f"--reference_cache {self.reference_cache} is a file, not a folder")
        if self.output_file is not None and self.save_stats is not None and \
                os.path.abspath(self.output_file) == os.path.abspath(self.save_stats):
            raise ValueError(f"--output_file and --save_stats are the same file {self.output_file}")


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", type=expand_path,
                        help="reference batch: npz (arr_0 uint8 NHWC, optional mu/sigma/mu_s/sigma_s), image folder or "
                             "a --save_stats npz")
    parser.add_argument("sample", type=expand_path, help="sample batch: npz or folder of image/.npy files")
    return add_arguments(parser, EvaluatorConfig)


def main(argv=None):
    values = given_options(get_args_parser(), argv)
    ref, sample = values.pop("ref"), values.pop("sample")
    with one_line_errors(PROG):
        config = make(EvaluatorConfig, command_line(values))
        results = evaluate(ref, sample, config.features, config.inception_graph, config.batch_size,
                           config.save_stats, config.reference_cache)
    text = "".join(f"{label_of_key(key)}: {value}\n" for key, value in results.items())
    print(text, end="")
    if config.output_file:
        with one_line_errors(PROG):
            Path(config.output_file).parent.mkdir(parents=True, exist_ok=True)
            new_file_text(config.output_file, text, "--output_file")


if __name__ == "__main__":
    sys.exit(main())
