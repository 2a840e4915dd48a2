#!/usr/bin/env bash
# Fetch the published models from the authors' Hugging Face repository, where they lie as in the
# published code's repository: <base>/pretrained_models/<model>/<file>. Each file's SHA-256 is checked
# against SHA256SUMS beside this script before the file appears under its name.
#   bash pretrained_models/download.sh                      # autoenc, checkerboard-L-2x, checkerboard-L-4x
#   bash pretrained_models/download.sh checkerboard-L-2x    # one model (its autoencoder comes along)
# CHECKERBOARD_HF_BASE overrides <base>: a mirror laid out the same way, or file:///path/to/a/copy.
#
# A file already here with the right SHA-256 is kept; one with another SHA-256 is never overwritten
# (move it away to fetch it again). A download goes to a temporary file named as common/files.py names
# them (.<file>.<pid>-<8 letters or digits>.tmp) and is renamed only once its SHA-256 matches. Nothing
# else stays behind: no partial file, and no model folder this run made and left empty (offline, say).
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
command -v curl >/dev/null || { echo "download.sh: error: curl is needed and was not found" >&2; exit 2; }

tmp=""
made=()  # folders this run created: removed at the end if they are still empty
finish() {
  [ -z "$tmp" ] || rm -f "$tmp"
  for folder in ${made[@]+"${made[@]}"}; do rmdir "$folder" 2>/dev/null || true; done
}
trap finish EXIT
trap 'exit 130' INT TERM

sha256() { sha256sum "$1" | cut -d' ' -f1; }

status=0
while read -r sum rel; do
  name="${rel%%/*}"
  printf '%s\n' "${wanted[@]}" | grep -qx "$name" || continue
  dest="$here/$rel"
  if [ -e "$dest" ]; then
    got="$(sha256 "$dest")"
    if [ "$got" = "$sum" ]; then
      echo "ok (present)  $rel"
    else
      echo "download.sh: error: $dest is already there with SHA-256 $got, expected $sum; left as it is (move it away to fetch it again)" >&2
      status=1
    fi
    continue
  fi
  folder="$(dirname "$dest")"
  if [ ! -d "$folder" ]; then
    mkdir -p "$folder"
    made+=("$folder")
  fi
  tmp="$folder/.$(basename "$dest").$$-$(printf '%04x%04x' $((RANDOM)) $((RANDOM))).tmp"
  (set -C; : > "$tmp")  # -C: never through a file that is already there
  url="$base/pretrained_models/$rel"
  echo "downloading   $rel"
  if ! curl -fL --retry 3 --silent --show-error -o "$tmp" "$url"; then
    rm -f "$tmp"; tmp=""
    echo "download.sh: error: could not fetch $url" >&2
    status=1; continue
  fi
  got="$(sha256 "$tmp")"
  if [ "$got" != "$sum" ]; then
    rm -f "$tmp"; tmp=""
    echo "download.sh: error: $url has SHA-256 $got, expected $sum; refused" >&2
    status=1; continue
  fi
  mv -n "$tmp" "$dest" || true  # -n: a file that appeared meanwhile is not replaced (checked below)
  if [ -e "$tmp" ]; then
    rm -f "$tmp"; tmp=""
    echo "download.sh: error: $dest appeared during the download; left as it is" >&2
    status=1; continue
  fi
  tmp=""
  echo "ok            $rel"
done < "$here/SHA256SUMS"
exit $status
