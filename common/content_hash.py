"""What a file holds, by its SHA-256: two files with one hash hold the same bytes whatever their names, and
a file replaced under its name has another. Recorded by every run that must not mix two inputs under one
name (a sweep's reference and checkpoints, a sampling run's checkpoint, the reference cache's entries)."""
import hashlib
import os

from common.images import IMAGE_EXTENSIONS, list_images

HASH_CHUNK = 1 << 24


def content_hash(path) -> str:
    """SHA-256 of a file's bytes, or of a folder's image files (names and bytes, in reading order)."""
    digest = hashlib.sha256()

    def add_file(p):
        with open(p, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)

    if os.path.isdir(path):
        for p in list_images(path, IMAGE_EXTENSIONS + (".npy",)):
            name = str(p.relative_to(path)).encode()
            digest.update(len(name).to_bytes(8, "little") + name + os.path.getsize(p).to_bytes(8, "little"))
            add_file(p)
    else:
        add_file(path)
    return digest.hexdigest()
