"""Fetch the published models into pretrained_models/<model>/ (download.sh runs this).

    bash pretrained_models/download.sh                      # autoenc, checkerboard-L-2x, checkerboard-L-4x
    bash pretrained_models/download.sh checkerboard-L-2x    # one model (its autoencoder comes along)

The files come through the Hugging Face Hub cache (models/hub.py: HF_ENDPOINT, HF_HUB_CACHE and
HF_HUB_OFFLINE apply), each checked against SHA256SUMS beside this script, and are copied here.
"""
import sys
from pathlib import Path

from common.cli import EXIT_FAILED, one_line_errors
from common.config import ArgumentParser
from models.hub import download_published

PROG = "download.sh"
HERE = Path(__file__).resolve().parent
DEFAULT = ["autoenc", "checkerboard-L-2x", "checkerboard-L-4x"]


def main(argv=None) -> int:
    parser = ArgumentParser(PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=f"published model names (default: {' '.join(DEFAULT)})")
    args = parser.parse_args(argv)
    with one_line_errors(PROG):
        failures = download_published(args.models or DEFAULT, HERE, HERE / "SHA256SUMS", say=print,
                                      complain=lambda line: print(f"{PROG}: error: {line}", file=sys.stderr))
    return EXIT_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(main())
