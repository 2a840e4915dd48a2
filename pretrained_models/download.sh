#!/usr/bin/env bash
# Fetch the published models from the authors' HuggingFace repository and verify each file's
# SHA-256 against SHA256SUMS beside this script. A file whose hash differs is refused (removed).
#   bash pretrained_models/download.sh                      # autoenc, checkerboard-L-2x, checkerboard-L-4x
#   bash pretrained_models/download.sh checkerboard-L-2x    # one model (its autoencoder comes along)
# CHECKERBOARD_HF_BASE overrides the source (a mirror, or file:// for a local copy).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base="${CHECKERBOARD_HF_BASE:-https://huggingface.co/deigen/checkerboardgen/resolve/main}"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(autoenc checkerboard-L-2x checkerboard-L-4x)

wanted=()
for name in "${names[@]}"; do
  if ! grep -q " $name/" "$here/SHA256SUMS"; then
    echo "download.sh: error: unknown model '$name' (known: $(cut -d' ' -f3 "$here/SHA256SUMS" | cut -d/ -f1 | sort -u | tr '\n' ' '))" >&2
    exit 2
  fi
  wanted+=("$name")
  case "$name" in checkerboard-*) wanted+=(autoenc) ;; esac
done

status=0
while read -r sum rel; do
  name="${rel%%/*}"
  printf '%s\n' "${wanted[@]}" | grep -qx "$name" || continue
  dest="$here/$rel"
  if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sum" ]; then
    echo "ok (present)  $rel"
    continue
  fi
  mkdir -p "$(dirname "$dest")"
  tmp="$dest.part"
  echo "downloading   $rel"
  if ! curl -fL --retry 3 -o "$tmp" "$base/$rel"; then
    rm -f "$tmp"; echo "download.sh: error: could not fetch $base/$rel" >&2; status=1; continue
  fi
  got="$(sha256sum "$tmp" | cut -d' ' -f1)"
  if [ "$got" != "$sum" ]; then
    rm -f "$tmp"
    echo "download.sh: error: $rel has SHA-256 $got, expected $sum; refused" >&2
    status=1; continue
  fi
  mv "$tmp" "$dest"
  echo "ok            $rel"
done < "$here/SHA256SUMS"
exit $status
