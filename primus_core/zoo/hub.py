"""The zoo: named pretrained models (registry.yaml ``zoo:``), pulled from the Hugging Face Hub at a
pinned commit, from an external file with its MD5 (the reference PRIMUS checkpoint), or from a copy
shipped in the repository's zoo/ folder; every file is checked against its sha256 before use.

Where things live:
- Hub sources: huggingface_hub's own cache (HF_HUB_CACHE, default ~/.cache/huggingface/hub).
- shipped and url sources: ``$PRIMUS_HOME/zoo/models/<name>`` (a model directory), downloads in
  ``$PRIMUS_HOME/zoo/downloads/<name>``.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from ..errors import PrimusError
from ..paths import plain_modes, primus_home, remove_dead_temps, sha256_file

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
# Download order: the config last, so that an interrupted pull leaves no directory that loads
# (weights are never loaded without their config).
FILE_ORDER = {WEIGHTS: 0, CARD: 1, CONFIG: 2}
URL_MANIFEST = ".zoo-manifest.json"
SHA256_RE = r"^[0-9a-f]{64}$"
MD5_RE = r"^[0-9a-f]{32}$"
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# A zoo name becomes a folder name under $PRIMUS_HOME/zoo: letters, digits, '-', '_' and single
# dots, starting with a letter or digit, at most 100 characters.
ZOO_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,99}")


class ZooError(PrimusError):
    """A zoo name, source, download or checksum problem."""


class HubUnreachable(ZooError):
    """The Hub cannot be reached (or offline mode), and the files are not in its cache."""


log = logging.getLogger("primus.zoo")


def note(message: str) -> None:
    """Progress and fallbacks go to stderr; stdout is for results."""
    print(f"primus zoo: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- registry entries
class ZooSource(BaseModel):
    """Where a model comes from: ``hub`` + ``revision`` (optionally with a ``shipped`` fallback),
    ``url`` + ``size`` + ``md5`` (a reference checkpoint, converted on pull), or ``shipped``."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    hub: str | None = Field(None, description="Hub repo id ORG/NAME")
    revision: str | None = Field(None, description="pinned 40-hex commit sha")
    url: str | None = Field(None, description="external checkpoint URL (http/https)")
    size: int | None = Field(None, gt=0, description="bytes of the file at url")
    md5: str | None = Field(None, pattern=MD5_RE, description="MD5 of the file at url")
    convert: Literal["stacked-rnn", "stacked-rnn-imu2clip"] = Field(
        "stacked-rnn", description="encoder variant the url checkpoint holds"
    )
    shipped: str | None = Field(None, description="model directory zoo/<dir>, relative to registry")

    @model_validator(mode="after")
    def _one_kind(self) -> ZooSource:
        if self.url is not None:
            if self.hub or self.shipped:
                raise ValueError("'url' cannot be combined with 'hub' or 'shipped'")
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"url must be http(s): {self.url!r}")
            if self.size is None or self.md5 is None:
                raise ValueError("a 'url' source needs 'size' and 'md5'")
        elif self.hub is None and self.shipped is None:
            raise ValueError("needs one of 'hub' (+ 'revision'), 'url' or 'shipped'")
        if self.hub is not None:
            check_repo_id(self.hub, ValueError)
            if self.revision is None or not COMMIT_RE.match(self.revision):
                raise ValueError(f"'revision' must pin a 40-hex commit sha (got {self.revision!r})")
        if self.shipped is not None:
            parts = Path(self.shipped).parts
            if Path(self.shipped).is_absolute() or ".." in parts or not parts:
                raise ValueError(
                    f"'shipped' must be a relative path like zoo/NAME: {self.shipped!r}"
                )
        return self

    @property
    def kind(self) -> str:
        return "url" if self.url else "hub" if self.hub else "shipped"


class ZooEntry(BaseModel):
    """One named model of registry.yaml's ``zoo:`` mapping."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    description: str
    source: ZooSource
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    recipe: str | None = None
    training_data: list[str] = Field(default_factory=list)
    parameters: int | None = Field(None, ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    headline_metric: str | None = None
    licence: str
    citation: str | None = None
    homepage: str | None = None
    # the folder relative ``shipped:`` paths resolve against (the declaring file's), and its layer
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _layer: str = PrivateAttr(default="")
    _file: str = PrivateAttr(default="")  # the declaring file (a plugin: its name)

    @model_validator(mode="after")
    def _check_files(self) -> ZooEntry:
        for name, digest in self.files.items():
            if "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"files: {name!r} must be a plain file name")
            if not re.match(SHA256_RE, digest):
                raise ValueError(f"files.{name}: expected a lowercase sha256 hex digest")
        if self.source.kind != "url":
            missing = {WEIGHTS, CONFIG} - set(self.files)
            if missing:
                raise ValueError(f"files must list the sha256 of {', '.join(sorted(missing))}")
        if self.headline_metric is not None and self.headline_metric not in self.metrics:
            raise ValueError(f"headline_metric {self.headline_metric!r} is not in metrics")
        return self

    def ordered_files(self) -> list[str]:
        return sorted(self.files, key=lambda name: (FILE_ORDER.get(name, 1), name))


def check_repo_id(repo_id: str, error: type[Exception] = ZooError) -> str:
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise error(
            f"invalid Hub repo id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')"
        )
    if len(repo_id.split("/")[1]) > 96:
        raise error(f"invalid Hub repo id {repo_id!r}: name longer than 96 characters")
    return repo_id


def zoo_entries() -> dict[str, ZooEntry]:
    """Every usable zoo entry of the layered registry (validated); a bad entry is reported with
    its file and dotted path and skipped."""
    return _load_entries()[0]


def _load_entries() -> tuple[dict[str, ZooEntry], dict[str, str]]:
    """(usable entries, name -> the problem of each skipped one)."""
    from ..components import format_validation_error
    from ..registry.layers import load_layers

    layers = load_layers()
    broken = {
        name: problem for (section, name), problem in layers.broken.items() if section == "zoo"
    }
    problems = list(layers.problems)
    entries = {}
    for name, raw in layers.zoo.items():
        problem = None
        if not ZOO_NAME_RE.fullmatch(name):
            problem = (
                f"{raw.source}: zoo name {name!r} is not a safe name (letters, digits, '-', '_' "
                "and single '.', starting with a letter or digit, at most 100 characters)"
            )
        else:
            try:
                entry = ZooEntry.model_validate(raw.body)
            except ValidationError as exc:
                problem = f"{raw.source}: {format_validation_error(f'zoo.{name}', exc)}"
        if problem is not None:
            broken[name] = problem
            problems.append(problem)
            continue
        entry._base_dir = raw.base_dir
        entry._layer = raw.layer
        entry._file = raw.source
        entries[name] = entry
    for problem in problems:
        log.warning("skipped: %s", problem)
    return entries, broken


def get_entry(name: str) -> ZooEntry:
    entries, broken = _load_entries()
    if name in entries:
        return entries[name]
    if name in broken:
        raise ZooError(broken[name])
    known = ", ".join(sorted(entries)) or "(none)"
    close = difflib.get_close_matches(name, list(entries), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ZooError(f"unknown zoo model '{name}'; known: {known}{hint}")


# ---------------------------------------------------------------- places
def zoo_path(area: str, name: str, suffix: str = "") -> Path:
    """``$PRIMUS_HOME/zoo/<area>/<name><suffix>``, refused unless ``name`` is a safe zoo name and
    the path (symlinks resolved) stays directly inside that area: a name never reaches outside."""
    if not isinstance(name, str) or not ZOO_NAME_RE.fullmatch(name):
        raise ZooError(f"zoo name {name!r} is not a safe name; refusing to use it as a path")
    area_dir = primus_home() / "zoo" / area
    path = area_dir / f"{name}{suffix}"
    if path.resolve().parent != area_dir.resolve():
        raise ZooError(f"{path} resolves outside {area_dir}; refusing to write there")
    return path


def local_model_dir(name: str) -> Path:
    """Where shipped and url models are installed."""
    return zoo_path("models", name)


def download_dir(name: str) -> Path:
    return zoo_path("downloads", name)


LOCK_TIMEOUT_S = 900.0


@contextlib.contextmanager
def install_lock(name: str):
    """Hold ``$PRIMUS_HOME/zoo/locks/<name>.lock`` (an OS file lock, released when the process
    dies): one process at a time checks, downloads, installs or repairs a model."""
    from filelock import FileLock, Timeout

    path = zoo_path("locks", name, ".lock")
    lock = FileLock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        note(f"{name}: waiting for another process that is installing it ({path})")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout:
            raise ZooError(
                f"{name}: another process has held {path} for {LOCK_TIMEOUT_S:.0f} s; "
                "try again when it is done"
            ) from None
    except OSError as exc:  # a read-only zoo cache: nothing will be written there either
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        note(f"{name}: cannot lock {path} ({exc.strerror}); going on without the lock")
        yield
        return
    try:
        yield
    finally:
        lock.release()


def hub_endpoint() -> str:
    """HF_ENDPOINT, read at call time (huggingface_hub reads it only at import)."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """huggingface_hub's cache, read at call time the way huggingface_hub reads it at import
    (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub), without
    importing it: ``zoo list`` must answer at once."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "huggingface" / "hub"


def offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# ---------------------------------------------------------------- checksums
def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, expected: str, label: str, delete_bad: bool = True) -> str:
    """sha256 of ``path`` against ``expected``; on a mismatch delete the file (and the blob a cache
    symlink points to) and raise."""
    actual = sha256_file(path)
    if actual == expected:
        return actual
    removed = ""
    if delete_bad:
        real = path.resolve()
        real.unlink(missing_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink(missing_ok=True)
        removed = f"; deleted {real}"
    raise ZooError(
        f"{label}: checksum mismatch (sha256 {actual[:16]}... expected {expected[:16]}...)"
        f"{removed}; pull it again"
    )


@dataclass
class VerifiedFile:
    path: Path
    sha256: str
    size: int


@dataclass
class VerifyReport:
    name: str
    files: list[VerifiedFile] = field(default_factory=list)
    seconds: float = 0.0


# ---------------------------------------------------------------- Hub errors
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection/timeout exception classes of whichever HTTP client huggingface_hub uses."""
    found: list[type[BaseException]] = []
    for module_name, attrs in [
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ]:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found += [getattr(module, a) for a in attrs if hasattr(module, a)]
    return tuple(found)


def hub_error(exc: BaseException, repo_id: str, revision: str, filename: str) -> ZooError:
    """A one-line ZooError for a huggingface_hub failure (never includes request headers)."""
    from huggingface_hub import errors as hf_errors

    endpoint = hub_endpoint()
    if isinstance(exc, _transport_errors()) or isinstance(exc, hf_errors.LocalEntryNotFoundError):
        return HubUnreachable(f"the Hub at {endpoint} cannot be reached ({type(exc).__name__})")
    if isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return HubUnreachable("offline mode (HF_HUB_OFFLINE) is on")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return ZooError(f"{repo_id}: revision '{revision}' not found on {endpoint}")
    if isinstance(exc, hf_errors.EntryNotFoundError):
        return ZooError(f"{repo_id}@{revision}: no file '{filename}' on {endpoint}")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return ZooError(
            f"{repo_id}: repository not found on {endpoint} (if it is private or gated, log in "
            "with `hf auth login` or set HF_TOKEN)"
        )
    if isinstance(exc, hf_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status in (408, 429):
            return HubUnreachable(
                f"the Hub at {endpoint} answered HTTP {status} for {repo_id}@{revision}"
            )
        if status in (401, 403):
            return ZooError(
                f"{repo_id}@{revision}: not found or not authorised (HTTP {status}); check the "
                "repo id and revision, or log in with `hf auth login` / set HF_TOKEN"
            )
        return ZooError(f"{repo_id}@{revision}: the Hub answered HTTP {status} for {filename}")
    return ZooError(f"{repo_id}@{revision}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


# ---------------------------------------------------------------- Hub pulls
def cached_hub_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """A file in huggingface_hub's cache (``models--ORG--NAME/snapshots/COMMIT/FILE``, a branch
    or tag resolved through ``refs/``), or None; read without importing huggingface_hub."""
    repo = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    commit = revision or "main"
    ref = repo / "refs" / commit
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    path = repo / "snapshots" / commit / filename
    return path if path.is_file() else None


def cached_hub_snapshot(entry: ZooEntry, revision: str | None = None) -> Path | None:
    """The snapshot folder holding every file of ``entry`` in the Hub cache, or None."""
    source = entry.source
    if source.hub is None:
        return None
    paths = []
    for filename in entry.ordered_files():
        found = cached_hub_file(source.hub, filename, revision or source.revision)
        if found is None:
            return None
        paths.append(found)
    folders = {p.parent for p in paths}
    return folders.pop() if len(folders) == 1 else None


def _probe_hub(repo_id: str, revision: str, filename: str) -> str:
    """One quick HEAD without retries: the resolved commit, or a clear error."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=hub_endpoint())
    try:
        meta = get_hf_file_metadata(url, timeout=10)
    except Exception as exc:  # noqa: BLE001 - mapped to one clear line
        raise hub_error(exc, repo_id, revision, filename) from None
    return meta.commit_hash or revision


def pull_hub(name: str, entry: ZooEntry, revision: str | None, offline: bool) -> Path:
    """Every file of ``entry`` into the Hub cache at the pinned (or given) revision, checked."""
    from huggingface_hub import hf_hub_download

    source = entry.source
    assert source.hub is not None and source.revision is not None
    revision = revision or source.revision
    snapshot = cached_hub_snapshot(entry, revision)
    if snapshot is None and offline:
        raise HubUnreachable(f"offline, and {source.hub}@{revision[:12]} is not in the Hub cache")
    commit = snapshot.name if snapshot is not None else None
    if snapshot is None:
        commit = _probe_hub(source.hub, revision, entry.ordered_files()[0])
    checked = commit == source.revision
    if not checked:
        note(
            f"{name}: revision {revision} ({commit}) is not the pinned {source.revision[:12]}: "
            "its files are not checked against registry.yaml"
        )
    paths: list[Path] = []
    for filename in entry.ordered_files():
        if snapshot is not None:
            path = snapshot / filename
        else:
            try:
                path = Path(
                    hf_hub_download(
                        source.hub,
                        filename,
                        revision=commit,
                        cache_dir=str(hub_cache_dir()),
                        endpoint=hub_endpoint(),
                    )
                )
            except Exception as exc:  # noqa: BLE001
                raise hub_error(exc, source.hub, revision, filename) from None
        if checked:
            check_file(path, entry.files[filename], f"{name}: {filename}")
        paths.append(path)
    return paths[0].parent


# ---------------------------------------------------------------- local model directories
def _complete(target: Path, filenames: list[str]) -> bool:
    return target.is_dir() and all((target / f).is_file() for f in filenames)


def expected_local_files(entry: ZooEntry, target: Path) -> dict[str, str] | None:
    """name -> sha256 for an installed directory: registry.yaml's, else (url sources) the
    manifest written at conversion; None when there is no usable manifest."""
    if entry.files:
        return dict(entry.files)
    try:
        return dict(json.loads((target / URL_MANIFEST).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def installed(name: str, entry: ZooEntry, target: Path) -> bool:
    """True when ``target`` is complete and checks out; False when absent or incomplete (it is
    reinstalled); a checksum mismatch deletes the bad file and raises."""
    expected = expected_local_files(entry, target)
    if expected is None or not _complete(target, list(expected)):
        return False
    check_local_dir(name, entry, target)
    return True


def check_local_dir(name: str, entry: ZooEntry, target: Path) -> list[VerifiedFile]:
    """Check an installed model directory against registry.yaml (or its manifest for url
    sources without listed files)."""
    expected = expected_local_files(entry, target)
    if expected is None:
        raise ZooError(f"{name}: {target / URL_MANIFEST} is missing or unreadable; pull again")
    out = []
    for filename in sorted(expected, key=lambda f: (FILE_ORDER.get(f, 1), f)):
        path = target / filename
        if not path.is_file():
            raise ZooError(f"{name}: {path} is missing; pull it again")
        digest = check_file(path, expected[filename], f"{name}: {filename}")
        out.append(VerifiedFile(path, digest, path.stat().st_size))
    return out


def _install(staging: Path, target: Path) -> Path:
    """Rename a checked staging directory into place (under the install lock). An incomplete
    directory already there is first renamed aside, so that at every moment ``target`` is either
    absent or a complete directory; a reader never sees one half-deleted or half-written."""
    plain_modes(staging)
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        os.replace(target, old / "old")
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _staging_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-*`` folders left next to ``target`` by processes that died
    mid-install (called under the install lock)."""
    removed = remove_dead_temps(target.parent, f".{target.name}.tmp-")
    if removed:
        note(
            f"removed {len(removed)} unfinished install(s) of {target.name} left by dead processes"
        )
    return removed


def pull_shipped(name: str, entry: ZooEntry) -> Path:
    """Install the copy shipped in the repository (zoo/<dir>) into the zoo cache, checked."""
    target = local_model_dir(name)
    if installed(name, entry, target):
        return target
    assert entry.source.shipped is not None
    shipped = entry._base_dir / entry.source.shipped
    if not shipped.is_dir():
        raise ZooError(f"{name}: the shipped copy {shipped} is missing")
    staging = _staging_dir(target)
    try:
        for filename in entry.files:
            src = shipped / filename
            if not src.is_file():
                raise ZooError(f"{name}: the shipped copy lacks {src}")
            shutil.copyfile(src, staging / filename)
            check_file(staging / filename, entry.files[filename], f"{name}: shipped {src}")
        return _install(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- resumable downloads
def download_resumable(
    url: str, dest: Path, *, size: int, md5: str, attempts: int = 6, desc: str | None = None
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` with HTTP Range resumes; check the size
    and MD5 (a mismatch deletes the download), then rename."""
    from tqdm import tqdm

    from ..version import __version__

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            break
        headers = {"User-Agent": f"primus/{__version__}"}
        if have:
            headers["Range"] = f"bytes={have}-"
            note(f"resuming {dest.name} at {have:,} of {size:,} bytes")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=60
            ) as r:
                if have and r.status != 206:  # the server ignored Range: start again
                    have = 0
                with (
                    open(part, "ab" if have else "wb") as fh,
                    tqdm(
                        total=size,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=desc or dest.name,
                        file=sys.stderr,
                        leave=False,
                    ) as bar,
                ):
                    while block := r.read(1 << 20):
                        fh.write(block)
                        bar.update(len(block))
            got = part.stat().st_size
            if got < size:  # the connection closed early without an error
                note(
                    f"download of {dest.name} interrupted at {got:,} of {size:,} bytes; "
                    f"retrying ({attempt}/{attempts})"
                )
        except urllib.error.HTTPError as exc:
            if exc.code == 416:
                part.unlink(missing_ok=True)
            elif exc.code < 500:
                raise ZooError(f"{url}: HTTP {exc.code} {exc.reason}") from None
            note(f"{url}: HTTP {exc.code}; retrying ({attempt}/{attempts})")
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            note(
                f"download of {dest.name} interrupted ({type(exc).__name__}); "
                f"retrying ({attempt}/{attempts})"
            )
        if attempt < attempts:
            time.sleep(min(0.25 * attempt, 2.0))
    have = part.stat().st_size if part.exists() else 0
    if have != size:
        raise ZooError(
            f"{url}: download incomplete ({have:,} of {size:,} bytes) after {attempts} attempts; "
            "run the pull again to resume"
        )
    actual = md5_file(part)
    if actual != md5:
        part.unlink()
        raise ZooError(f"{url}: MD5 mismatch ({actual}, expected {md5}); deleted the download")
    os.replace(part, dest)
    return dest


def pull_url(name: str, entry: ZooEntry, offline: bool, keep_original: bool) -> Path:
    """Download a reference checkpoint resumably, check it, convert it to a model directory."""
    from .modeldir import convert_reference

    source = entry.source
    assert source.url and source.size and source.md5
    target = local_model_dir(name)
    if installed(name, entry, target):
        return target
    if offline:
        raise ZooError(
            f"{name}: not cached, and offline; pull it once online ({source.url}, "
            f"{source.size:,} bytes)"
        )
    filename = source.url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not ZOO_NAME_RE.fullmatch(filename):  # the download keeps a safe file name only
        filename = "checkpoint.ckpt"
    ckpt = download_dir(name) / filename
    if ckpt.is_file() and (ckpt.stat().st_size != source.size or md5_file(ckpt) != source.md5):
        ckpt.unlink()
    if not ckpt.is_file():
        download_resumable(source.url, ckpt, size=source.size, md5=source.md5, desc=name)
    staging = _staging_dir(target)
    try:
        converted = convert_reference(ckpt, staging / "dir", variant=source.convert)
        digests = {f.name: sha256_file(f) for f in sorted(converted.iterdir()) if f.is_file()}
        manifest = {"source": {"url": source.url, "md5": source.md5}, "files": digests}
        (converted / URL_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if entry.files:
            check_local_dir(name, entry, converted)
        _install(converted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if keep_original:
        note(f"kept the original checkpoint at {ckpt}")
    else:
        ckpt.unlink()
    return target


# ---------------------------------------------------------------- public API
HUB_PREFIX = "hf-hub:"


def parse_hub_id(text: str) -> tuple[str, str | None] | None:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (repo id, revision or None); None for anything else."""
    if not isinstance(text, str) or not text.startswith(HUB_PREFIX):
        return None
    repo_id, _, revision = text[len(HUB_PREFIX) :].partition("@")
    check_repo_id(repo_id)
    if "@" in text[len(HUB_PREFIX) :] and not revision:
        raise ZooError(f"{text}: empty revision after '@'")
    return repo_id, revision or None


def pull_hub_id(repo_id: str, revision: str | None, offline: bool) -> Path:
    """A model directory straight from the Hub: the revision (default ``main``) resolved to a
    commit and reported, config.json, model.safetensors and the card downloaded into the Hub
    cache; checked against sha256 digests where a zoo entry pins this repo at this commit."""
    from huggingface_hub import hf_hub_download

    label = f"hf-hub:{repo_id}"
    revision = revision or "main"
    if offline:
        found = [cached_hub_file(repo_id, f, revision) for f in (WEIGHTS, CONFIG)]
        if None in found:
            raise HubUnreachable(f"offline, and {label}@{revision} is not in the Hub cache")
        return found[0].parent
    commit = _probe_hub(repo_id, revision, CONFIG)
    if commit != revision:
        note(f"{label}: revision {revision} resolved to commit {commit}")
    pinned = next(
        (
            e
            for e in zoo_entries().values()
            if e.source.hub == repo_id and e.source.revision == commit
        ),
        None,
    )
    if pinned is None:
        note(f"{label}@{commit[:12]}: no zoo entry pins this commit; files are not hash-checked")
    folder = None
    for filename in (WEIGHTS, CARD, CONFIG):
        try:
            path = Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=commit,
                    cache_dir=str(hub_cache_dir()),
                    endpoint=hub_endpoint(),
                )
            )
        except Exception as exc:  # noqa: BLE001
            if filename == CARD:  # a repo without a model card still loads
                continue
            raise hub_error(exc, repo_id, commit, filename) from None
        if pinned is not None and filename in pinned.files:
            check_file(path, pinned.files[filename], f"{label}: {filename}")
        folder = path.parent
    assert folder is not None
    if commit != revision and ".." not in Path(revision).parts and not Path(revision).is_absolute():
        # what huggingface_hub records for a branch or tag: offline use then finds this commit
        ref = folder.parent.parent / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit, encoding="utf-8")
    return folder


def pull(
    name: str, *, revision: str | None = None, offline: bool = False, keep_original: bool = False
) -> Path:
    """The local model directory of zoo model ``name`` (or of a Hub id ``hf-hub:ORG/NAME[@REV]``),
    downloaded and checked if needed."""
    hub_id = parse_hub_id(name)
    if hub_id is not None:
        repo_id, pinned = hub_id
        if revision is not None and pinned is not None and revision != pinned:
            raise ZooError(f"{name}: --revision {revision} contradicts the id's @{pinned}")
        return pull_hub_id(repo_id, revision or pinned, offline or offline_from_env())
    entry = get_entry(name)
    source = entry.source
    offline = offline or offline_from_env()
    if revision is not None and source.hub is None:
        raise ZooError(f"{name}: --revision applies only to Hub sources ({source.kind} source)")
    with install_lock(name):
        clean_stale_staging(local_model_dir(name))
        return _pull_locked(name, entry, revision, offline, keep_original)


def _pull_locked(
    name: str, entry: ZooEntry, revision: str | None, offline: bool, keep_original: bool
) -> Path:
    source = entry.source
    if source.url:
        return pull_url(name, entry, offline, keep_original)
    if source.hub:
        try:
            return pull_hub(name, entry, revision, offline)
        except HubUnreachable as exc:
            if source.shipped is None or revision not in (None, source.revision):
                raise ZooError(f"{name}: {exc}; no cached or shipped copy to use") from None
            note(f"{name}: {exc}; using the zoo cache or the shipped copy {source.shipped}")
    return pull_shipped(name, entry)


def resolve_model_dir(name: str) -> Path:
    """For ``load_pretrained(NAME)``: the checked model directory (a zoo name or an
    ``hf-hub:ORG/NAME[@REV]`` id), pulled when needed."""
    return pull(name)


def cached_dir(name: str, entry: ZooEntry) -> Path | None:
    """A complete local copy (Hub cache snapshot or zoo cache), without hashing; or None."""
    snapshot = cached_hub_snapshot(entry)
    if snapshot is not None:
        return snapshot
    local = local_model_dir(name)
    expected = expected_local_files(entry, local)
    return local if expected is not None and _complete(local, list(expected)) else None


def verify(name: str) -> VerifyReport:
    """Re-hash every cached file of ``name`` (Hub cache and zoo cache) against registry.yaml
    (under the install lock: a bad file is deleted, never while another process installs)."""
    entry = get_entry(name)
    with install_lock(name):
        return _verify_locked(name, entry)


def _verify_locked(name: str, entry: ZooEntry) -> VerifyReport:
    start = time.perf_counter()
    report = VerifyReport(name)
    snapshot = cached_hub_snapshot(entry)
    if snapshot is not None:
        for filename in entry.ordered_files():
            path = snapshot / filename
            digest = check_file(path, entry.files[filename], f"{name}: {path}")
            report.files.append(VerifiedFile(path, digest, path.stat().st_size))
    local = local_model_dir(name)
    if local.is_dir():
        report.files += check_local_dir(name, entry, local)
    if not report.files:
        raise ZooError(f"{name}: not cached; run `primus zoo pull {name}`")
    report.seconds = time.perf_counter() - start
    return report


def count_parameters(model_dir: Path) -> int | None:
    from safetensors import safe_open

    try:
        with safe_open(str(model_dir / WEIGHTS), "pt") as fh:
            total = 0
            for key in fh.keys():
                n = 1
                for dim in fh.get_slice(key).get_shape():
                    n *= dim
                total += n
            return total
    except Exception:  # noqa: BLE001 - a listing never fails on one bad file
        return None


def describe(name: str, entry: ZooEntry) -> dict:
    """A row of ``primus zoo list`` / the body of ``zoo info``."""
    path = cached_dir(name, entry)
    params = entry.parameters
    if params is None and path is not None:
        params = count_parameters(path)
    headline = entry.headline_metric or next(iter(entry.metrics), None)
    return {
        "name": name,
        "description": entry.description,
        "source": entry.source.kind,
        "parameters": params,
        "training_data": entry.training_data,
        "headline_metric": headline,
        "headline_value": entry.metrics.get(headline) if headline else None,
        "cached": path is not None,
        "path": str(path) if path else None,
        "layer": entry._layer,
        "file": entry._file,
    }


# ---------------------------------------------------------------- push
@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit: str
    files: dict[str, str]
    card_uploaded: bool


def push(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    overwrite_card: bool = False,
) -> PushResult:
    """Upload a model directory (weights, config, model card) to ``repo_id`` in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .modeldir import load_model_dir

    model_dir = Path(model_dir)
    check_repo_id(repo_id)
    load_model_dir(model_dir)  # never publish a directory that does not load
    if not (model_dir / CARD).is_file():
        raise ZooError(f"{model_dir}: missing {CARD} (the model card)")
    branch = revision or "main"
    api = HfApi(endpoint=hub_endpoint())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        has_card = api.file_exists(repo_id, CARD, revision=branch)
        names = [WEIGHTS, CONFIG] + ([CARD] if overwrite_card or not has_card else [])
        operations = [CommitOperationAdd(n, str(model_dir / n)) for n in names]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=f"primus zoo push: {model_dir.name}",
            revision=branch,
        )
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to one clear line, never with headers
        raise hub_error(exc, repo_id, branch, "(push)") from None
    if has_card and not overwrite_card:
        note(f"kept the model card already on {repo_id}@{branch} (use --overwrite-card)")
    files = {n: sha256_file(model_dir / n) for n in names}
    return PushResult(repo_id, branch, info.oid, files, CARD in names)


def registry_snippet(
    name: str, result: PushResult, model_dir: str | Path | None = None, licence: str | None = None
) -> str:
    """The registry.yaml lines that pin what was pushed: a complete zoo entry that validates
    (description, training data and recipe from the model's config.json when it has them)."""
    import yaml

    config: dict = {}
    if model_dir is not None and (Path(model_dir) / CONFIG).is_file():
        config = json.loads((Path(model_dir) / CONFIG).read_text(encoding="utf-8"))
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    entry = {
        "description": recipe.get("description") or f"{result.repo_id} on the Hub",
        "source": {"hub": result.repo_id, "revision": result.commit},
        "files": dict(result.files),
        "training_data": list(config.get("training_data") or []),
        "licence": licence or "unspecified",
    }
    if recipe.get("name"):
        entry["recipe"] = recipe["name"]
    ZooEntry.model_validate(entry)  # what is printed is what the registry accepts
    return yaml.safe_dump({"zoo": {name: entry}}, sort_keys=False).rstrip("\n")


def load_pretrained(name_or_dir: str | Path, device: str | None = None):
    """A model directory path, or a zoo name (pulled when needed); the encoder in eval mode."""
    from .modeldir import load_model_dir

    path = Path(name_or_dir)
    if path.is_dir():
        return load_model_dir(path, device=device)
    return load_model_dir(resolve_model_dir(str(name_or_dir)), device=device)
