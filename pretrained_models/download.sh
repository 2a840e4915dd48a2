#!/usr/bin/env bash
# Fetch the published models into pretrained_models/<model>/ through the Hugging Face Hub cache, each
# file's SHA-256 checked against SHA256SUMS beside this script (see download.py, models/hub.py).
#   bash pretrained_models/download.sh                      # autoenc, checkerboard-L-2x, checkerboard-L-4x
#   bash pretrained_models/download.sh checkerboard-L-2x    # one model (its autoencoder comes along)
# A file already here with the right SHA-256 is kept; one with another SHA-256 is never overwritten.
exec python "$(dirname "$0")/download.py" "$@"
