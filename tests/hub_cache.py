"""A Hugging Face Hub cache laid out as huggingface_hub keeps downloaded files, for tests that work
offline (HF_HUB_CACHE pointed at it, HF_HUB_OFFLINE=1)."""
import hashlib
import os

COMMIT = "a" * 40


def lay_out_cache(cache, repo_id, files: dict, commit=COMMIT, refs=("main",)):
    """`files` (path in the repository -> bytes) as huggingface_hub keeps a downloaded snapshot: each
    file a blob named by its SHA-256, linked from snapshots/<commit>/<path>; refs/<name> -> commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for path, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return repo
