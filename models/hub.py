"""Models on the Hugging Face Hub: a reference `hf://<owner>/<name>/<path in the repository>[@<revision>]`,
or a published model's bare name (`checkerboard-L-2x`), becomes the same model folder a local one is,
inside the Hub cache.

The files come through `huggingface_hub` (`hf_hub_download`): they land in the Hub cache shared with
other projects (`HF_HUB_CACHE`), from `HF_ENDPOINT`, or from the cache alone under `HF_HUB_OFFLINE=1`.
All files of one model come from one commit, so the autoencoder config that a model's config names is
found inside the same snapshot (models/checkpoint.py's `resolve_path`). Files of the published repository
are checked against pretrained_models/SHA256SUMS before use: a file it does not list, or one with
another SHA-256, is refused. Files of other repositories are the user's own, loaded as a local folder is.
"""
import hashlib
import logging
import os
import posixpath
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common.files import FolderInUse, remove_temporaries, run_lock, temporary_path
from common.yaml_files import load_yaml

from .checkpoint_format import CONFIG, LAST

SCHEME = "hf://"
# The published models, where the published code's download script fetches them from:
# huggingface.co/deigen/checkerboardgen, files under pretrained_models/<model>/.
PUBLISHED_REPO = "deigen/checkerboardgen"
PUBLISHED_FOLDER = "pretrained_models"
SUMS_FILE = Path(__file__).resolve().parents[1] / PUBLISHED_FOLDER / "SHA256SUMS"


class NotListed(ValueError):
    """A file of the published repository that SHA256SUMS does not list: refused, as it cannot be checked."""


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    path: str  # a model folder or a checkpoint file in the repository
    revision: str | None = None  # a branch, tag or commit; None: main

    def uri(self, path: str | None = None) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"{SCHEME}{self.repo_id}/{self.path if path is None else path}{at}"


def read_sums(sums_file=SUMS_FILE) -> dict[str, str]:
    """<model>/<file> -> SHA-256, from a SHA256SUMS file (`sha256sum`'s format)."""
    sums = {}
    for number, line in enumerate(Path(sums_file).read_text().splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel:
            raise ValueError(f"{sums_file}:{number}: not a '<sha256>  <model>/<file>' line")
        sums[rel] = digest
    return sums


def published_models(sums_file=SUMS_FILE) -> list[str]:
    """The names of the published models (and the autoencoder they share), as SHA256SUMS lists them."""
    return sorted({rel.split("/")[0] for rel in read_sums(sums_file)})


def parse_reference(text, sums_file=SUMS_FILE) -> HubReference | None:
    """The Hub reference `text` is, or None for a local path. A published model's bare name is one
    unless a file or folder of that name is in the working directory."""
    text = str(text)
    if not text.startswith(SCHEME):
        if "/" in text or Path(text).exists() or not Path(sums_file).is_file():
            return None
        if f"{text}/{CONFIG}" not in read_sums(sums_file):
            return None
        return HubReference(PUBLISHED_REPO, f"{PUBLISHED_FOLDER}/{text}")
    rest, at, revision = text[len(SCHEME):].partition("@")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 3 or ".." in parts or (at and not revision):
        raise ValueError(f"{text}: not a Hub model reference (hf://<owner>/<name>/<model folder or checkpoint "
                         f"file>[@<revision>], e.g. {SCHEME}{PUBLISHED_REPO}/{PUBLISHED_FOLDER}/checkerboard-L-2x)")
    return HubReference(f"{parts[0]}/{parts[1]}", "/".join(parts[2:]), revision or None)


def is_hub_reference(text) -> bool:
    return parse_reference(text) is not None


def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_sha256(ref: HubReference, path: str, sums_file) -> str | None:
    """The published SHA-256 of a file of the published repository (None for other repositories)."""
    if ref.repo_id != PUBLISHED_REPO:
        return None
    rel = path[len(PUBLISHED_FOLDER) + 1:] if path.startswith(PUBLISHED_FOLDER + "/") else None
    expected = read_sums(sums_file).get(rel)
    if expected is None:
        raise NotListed(f"{ref.uri(path)}: not listed in {sums_file}, so it cannot be checked; refused")
    return expected


def check_sha256(path, expected: str, name) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"{name} ({path}) has SHA-256 {actual}, expected {expected}; refused")


def _endpoint() -> str:
    from huggingface_hub import constants
    return constants.ENDPOINT


@contextmanager
def _quiet_library():
    """huggingface_hub warns on every retry of a failed request: the failure is said once, by our error."""
    library = logging.getLogger("huggingface_hub")
    level = library.level
    library.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library.setLevel(level)


def fetch_file(ref: HubReference, path: str, sums_file=SUMS_FILE, revision: str | None = None) -> Path:
    """The local file (in the Hub cache) of `path` in the repository, downloaded if not cached and
    checked against SHA256SUMS where it is published. Every failure is one ValueError or OSError line."""
    # huggingface_hub is imported where it is used: every `import models` would pay for it otherwise.
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    expected = _expected_sha256(ref, path, sums_file)
    uri = ref.uri(path)
    try:
        with _quiet_library():
            local = Path(hf_hub_download(ref.repo_id, path, revision=revision or ref.revision))
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(f"{uri}: not in the Hub cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE "
                                    f"is set") from None
        raise OSError(f"{uri}: could not be fetched (no answer from {_endpoint()}) and is not in the Hub cache "
                      f"({constants.HF_HUB_CACHE})") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{uri}: no repository {ref.repo_id} on {_endpoint()} (or it is private)") from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{uri}: no revision {ref.revision} in {ref.repo_id}") from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{uri}: no file {path} in {ref.repo_id}") from None
    except HfHubHTTPError as e:
        raise OSError(f"{uri}: could not be fetched: {str(e).splitlines()[0]}") from None
    if expected is not None:
        check_sha256(local, expected, uri)
    return local


def reap_incomplete(repo_id: str) -> list[Path]:
    """Removes the partial downloads (blobs/<etag>.<token>.incomplete) that killed processes left in the
    Hub cache for `repo_id`, and returns them. huggingface_hub writes a blob only while holding
    .locks/<repo folder>/<etag>.lock (an flock, released by the kernel when its process dies): a partial
    blob whose lock can be taken at once has no writer left."""
    from filelock import FileLock, Timeout
    from huggingface_hub import constants

    folder = f"models--{repo_id.replace('/', '--')}"
    cache = Path(constants.HF_HUB_CACHE)
    removed = []
    for partial in sorted((cache / folder / "blobs").glob("*.incomplete")):
        lock = FileLock(cache / ".locks" / folder / f"{partial.name.split('.')[0]}.lock")
        try:
            lock.acquire(timeout=0)
        except (Timeout, NotImplementedError, OSError):
            continue  # being written, or a file system without flock: left alone
        try:
            partial.unlink(missing_ok=True)
            removed.append(partial)
        finally:
            lock.release()
    return removed


def _snapshot_revision(local: Path, path: str) -> str:
    """The commit of the snapshot folder a fetched file lies in."""
    return local.parents[len(path.split("/")) - 1].name


def snapshot_root(path) -> Path | None:
    """The snapshot folder of the Hub cache that `path` lies in (models--<owner>--<name>/snapshots/<commit>),
    or None."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
            return folder
    return None


def _autoencoder_config_path(config: Path) -> str | None:
    data = load_yaml(config)
    autoenc = data.get("model", {}).get("autoenc") if isinstance(data, dict) and isinstance(data.get("model"), dict) \
        else None
    path = autoenc.get("config_path") if isinstance(autoenc, dict) else None
    return path if isinstance(path, str) and not posixpath.isabs(path) else None


def fetch_model(ref: HubReference, sums_file=SUMS_FILE) -> Path:
    """The local checkpoint file of a Hub model reference, with its config.yaml beside it and the
    autoencoder config the config names, all from one snapshot."""
    folder, name = (posixpath.dirname(ref.path), posixpath.basename(ref.path)) if ref.path.endswith(".pth") \
        else (ref.path, LAST)
    reap_incomplete(ref.repo_id)
    checkpoint = fetch_file(ref, f"{folder}/{name}", sums_file)
    commit = _snapshot_revision(checkpoint, f"{folder}/{name}")
    config = fetch_file(ref, f"{folder}/{CONFIG}", sums_file, commit)
    autoenc = _autoencoder_config_path(config)
    if autoenc:
        # As resolve_path tries them: beside the config, then from the repository's root.
        candidates = [posixpath.normpath(f"{folder}/{autoenc}"), posixpath.normpath(autoenc)]
        missing = None
        for candidate in candidates:
            if candidate.startswith(".."):
                continue
            try:
                fetch_file(ref, candidate, sums_file, commit)
                break
            except (FileNotFoundError, NotListed) as e:
                missing = e
        else:
            if isinstance(missing, NotListed):
                raise missing
            raise FileNotFoundError(f"{ref.uri(folder + '/' + CONFIG)} names autoencoder config '{autoenc}', found "
                                    f"neither beside it nor from the repository's root ({missing})")
    return checkpoint


def download_published(names, target, sums_file=SUMS_FILE, say=print, complain=print) -> int:
    """The published models `names` (their autoencoder comes along) checked into the Hub cache and copied
    into `target/<model>/<file>`. A file already there with the right SHA-256 is kept; one with another is
    never overwritten. Each model folder is held with common/files.py's run_lock while it is written:
    temporaries a killed download left there are removed first, and copies go through temporaries
    renamed into place only once whole. A model folder this call made and left empty is removed again.
    `complain` gets one line per failure. Returns the number of failures."""
    target = Path(target)
    sums = read_sums(sums_file)
    known = published_models(sums_file)
    wanted = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown model '{name}' (known: {' '.join(known)})")
        wanted += [name, "autoenc"] if name.startswith("checkerboard-") else [name]
    reap_incomplete(PUBLISHED_REPO)
    failures = 0
    for model in dict.fromkeys(wanted):
        folder = target / model
        made = not folder.is_dir()
        try:
            with run_lock(folder):
                remove_temporaries(folder)
                for rel, expected in sums.items():
                    if rel.split("/")[0] == model and not _place(rel, expected, target, sums_file, say, complain):
                        failures += 1
        except FolderInUse as e:
            complain(str(e))
            failures += 1
        finally:
            if made and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return failures


def _place(rel: str, expected: str, target: Path, sums_file, say, complain) -> bool:
    """One published file at target/rel: kept if there and right, else fetched and copied there."""
    dest = target / rel
    if dest.exists():
        actual = sha256_of(dest)
        if actual != expected:
            complain(f"{dest} is already there with SHA-256 {actual}, expected {expected}; left as it is "
                     f"(move it away to fetch it again)")
            return False
        say(f"ok (present)  {rel}")
        return True
    path = f"{PUBLISHED_FOLDER}/{rel}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_new(fetch_file(HubReference(PUBLISHED_REPO, path), path, sums_file), dest, expected)
    except (ValueError, OSError) as e:
        complain(str(e))
        return False
    say(f"ok            {rel}")
    return True


def _copy_new(source: Path, dest: Path, expected: str) -> None:
    """A copy of `source` at `dest`, which must not exist: written to a temporary, checked, then linked
    into place (a link never replaces a file that appeared meanwhile)."""
    tmp = temporary_path(dest)
    try:
        with open(source, "rb") as src, open(tmp, "xb") as out:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        check_sha256(tmp, expected, dest)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            raise FileExistsError(f"{dest} appeared during the download; left as it is") from None
    finally:
        tmp.unlink(missing_ok=True)
