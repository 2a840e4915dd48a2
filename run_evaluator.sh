#!/usr/bin/env bash
# Sample NUM_SAMPLES images with one checkpoint and setting, then score them with the ADM
# evaluator against the reference batch (the ADM protocol, evaluator.py). Results: eval/<setting>_eval.txt.
# Any setting below can be overridden from the environment, e.g. CFG=2.0 bash run_evaluator.sh
set -euo pipefail

CKPT=${CKPT:-pretrained_models/checkerboard-L-2x}
CFG=${CFG:-1.5}                 # classifier-free guidance scale
CFG_START=${CFG_START:-5}       # first sampling step that is guided
STEPS=${STEPS:-4}               # sampling steps per scale
NUM_SAMPLES=${NUM_SAMPLES:-50000}
REF=${REF:-pretrained_models/VIRTUAL_imagenet256_labeled.npz}
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
[ "${NPROC:-0}" -gt 0 ] || NPROC=1  # no GPU visible: one process

cd "$(dirname "$0")"  # the defaults above are relative to the repository root
SETTING="$(basename "$CKPT")_cfg${CFG}_start${CFG_START}_steps${STEPS}"
OUT="eval/${SETTING}_eval.txt"
# evaluator.py writes new files only; say so now rather than after sampling 50k images
if [ -e "$OUT" ]; then
    echo "run_evaluator.sh: error: $OUT exists (this setting was evaluated); move it away to evaluate again" >&2
    exit 2
fi

torchrun --nproc_per_node="$NPROC" main_sample.py --checkpoint "$CKPT" --cfg "$CFG" \
    --cfg_start_step "$CFG_START" --steps_per_scale "$STEPS" --num_samples "$NUM_SAMPLES" \
    --fid --output_dir "samples/$SETTING"
python evaluator.py "$REF" "samples/$SETTING/samples.npz" --output_file "$OUT"
