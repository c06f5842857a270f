"""The teacher-embedding cache: teachers never embed the same input twice.

Content-addressed on disk: the key of an input is sha256(teacher identity + canonical input bytes).
Layout under the root (default ``$PRIMUS_HOME/cache/teachers``)::

    .lock                       fcntl lock taken to update the json files below
    stats.json                  hits/misses per teacher, summed over every run
    <teacher>-<hash16>/         one folder per teacher identity
        identity.txt            the identity string
        index.json              shard file -> rows (a summary, for `primus cache info`)
        shards/<sha32>.npy      structured rows (key: 32 bytes, emb: float32[D]), memory-mapped;
                                named by the hash of its keys, so the same batches give the same
                                files whichever process (or torchrun rank) computed them

A shard is written under a temporary name, flushed to disk, then renamed (atomic): a reader sees
complete shards or none, so an interrupted writer leaves at most a temporary file that is never
read (and is swept after an hour). When two writers compute the same input in different batches,
both rows are kept and the first one found is used; the same batch gives the same file (replaced
atomically by identical rows).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..paths import primus_home, sha256_file

KEY_BYTES = 32
TEMP_MAX_AGE_S = 3600.0


def default_root() -> Path:
    return primus_home() / "cache" / "teachers"


# --------------------------------------------------------------------------- keys
def path_digest(path: Path, suffixes: Sequence[str] | None = None) -> str:
    """sha256 hex of a file's content, or of a folder's files (names and contents, sorted;
    only those ending in ``suffixes`` when given). Paths are identified by content, not name."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file() and (suffixes is None or item.suffix.lower() in suffixes):
            digest.update(item.name.encode() + b"\0" + bytes.fromhex(sha256_file(item)))
    return digest.hexdigest()


def canonical_input(x: Any) -> bytes:
    """Bytes that identify an input: texts by UTF-8, arrays by dtype/shape/data, paths by content."""
    if isinstance(x, str):
        return b"s:" + x.encode("utf-8")
    if isinstance(x, bytes):
        return b"b:" + x
    if isinstance(x, os.PathLike):
        return b"p:" + path_digest(Path(x)).encode()
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)
        return f"a:{x.dtype.str}:{x.shape}:".encode() + x.tobytes()
    if isinstance(x, (list, tuple)):
        parts = [hashlib.sha256(canonical_input(item)).digest() for item in x]
        return f"l:{len(parts)}:".encode() + b"".join(parts)
    raise DataError(f"cannot cache a teacher input of type {type(x).__name__}")


def input_key(identity: str, data: bytes) -> bytes:
    return hashlib.sha256(identity.encode("utf-8") + b"\0" + data).digest()


def teacher_input_bytes(teacher: Any, x: Any) -> bytes:
    """A teacher may define ``input_bytes(x)`` (video teachers read str as a path)."""
    own = getattr(teacher, "input_bytes", None)
    return own(x) if callable(own) else canonical_input(x)


def teacher_has_input(teacher: Any, x: Any) -> bool:
    """A teacher may define ``has_input(x)`` (a video record with path None has no video);
    otherwise None and "" mean no input."""
    own = getattr(teacher, "has_input", None)
    if callable(own):
        return bool(own(x))
    return x is not None and not (isinstance(x, str) and not x)


# --------------------------------------------------------------------------- files
@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on ``path`` (created if missing), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _shard_dtype(dim: int) -> np.dtype:
    return np.dtype([("key", f"V{KEY_BYTES}"), ("emb", "<f4", (dim,))])


def teacher_folder_name(identity: str) -> str:
    kind = "".join(c if c.isalnum() or c in "-_" else "_" for c in identity.split("|")[0])[:40]
    return f"{kind or 'teacher'}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


class TeacherStore:
    """The shards of one teacher identity, with an in-memory key -> (shard, row) index."""

    def __init__(self, folder: Path, identity: str):
        self.folder = folder
        self.identity = identity
        self.shards_dir = folder / "shards"
        self.dim: int | None = None
        self.index: dict[bytes, tuple[str, int]] = {}
        self._maps: dict[str, np.ndarray] = {}
        self._seen: set[str] = set()

    def create(self) -> None:
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "identity.txt"
        if not marker.exists():
            _write_atomic(marker, self.identity.encode("utf-8") + b"\n")
        self._sweep_temporaries()

    def _sweep_temporaries(self) -> None:
        now = time.time()
        for tmp in self.shards_dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > TEMP_MAX_AGE_S:
                    tmp.unlink()

    def refresh(self) -> None:
        """Index the complete shards written since the last look (by any process)."""
        if not self.shards_dir.is_dir():
            return
        for path in sorted(self.shards_dir.glob("*.npy")):
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            try:
                rows = np.load(path, mmap_mode="r", allow_pickle=False)
                dim = int(rows.dtype["emb"].shape[0])
                if rows.dtype != _shard_dtype(dim):
                    raise ValueError(f"unexpected dtype {rows.dtype}")
            except (ValueError, KeyError, OSError, TypeError) as exc:
                warnings.warn(
                    f"teacher cache: skipping unreadable shard {path}: {exc}", stacklevel=2
                )
                continue
            if self.dim is not None and dim != self.dim:
                warnings.warn(
                    f"teacher cache: skipping {path}: {dim}-d, not {self.dim}-d", stacklevel=2
                )
                continue
            self.dim = dim
            self._maps[path.name] = rows
            for row, key in enumerate(
                rows["key"].tobytes()[i : i + KEY_BYTES]
                for i in range(0, rows.shape[0] * KEY_BYTES, KEY_BYTES)
            ):
                self.index.setdefault(key, (path.name, row))

    def read(self, keys: Sequence[bytes]) -> np.ndarray:
        """Embeddings of indexed keys, in order."""
        assert self.dim is not None
        out = np.empty((len(keys), self.dim), dtype=np.float32)
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            shard, row = self.index[key]
            targets, rows = by_shard.setdefault(shard, ([], []))
            targets.append(i)
            rows.append(row)
        for shard, (targets, rows) in by_shard.items():
            out[targets] = self._maps[shard]["emb"][rows]
        return out

    def write(self, keys: Sequence[bytes], emb: np.ndarray) -> str:
        """Publish a complete shard atomically; returns its file name."""
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if self.dim is not None and emb.shape[1] != self.dim:
            raise DataError(
                f"teacher {self.identity!r} gave {emb.shape[1]}-d embeddings; the cache holds "
                f"{self.dim}-d ones for it"
            )
        rows = np.empty(len(keys), dtype=_shard_dtype(emb.shape[1]))
        rows["key"] = np.frombuffer(b"".join(keys), dtype=f"V{KEY_BYTES}")
        rows["emb"] = emb
        name = f"{hashlib.sha256(b''.join(keys)).hexdigest()[:32]}.npy"
        tmp = self.shards_dir / f".{name}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, rows, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.shards_dir / name)
        # a shard of these keys that was skipped as damaged has the same name: read it again
        self._seen.discard(name)
        with locked(self.folder.parent / ".lock"):
            summary = _read_json(self.folder / "index.json")
            summary.update(identity=self.identity, dim=int(emb.shape[1]))
            summary.setdefault("shards", {})[name] = len(keys)
            text = json.dumps(summary, indent=1, sort_keys=True)
            _write_atomic(self.folder / "index.json", text.encode())
        return name


# --------------------------------------------------------------------------- the cache
def _embed_batches(teacher: Any, inputs: list[Any], batch_size: int) -> Iterator[torch.Tensor]:
    """The teacher's ``embed_batches`` (video teachers decode ahead across batches), or its
    ``embed`` on successive batches for a teacher that has only that."""
    own = getattr(teacher, "embed_batches", None)
    if callable(own):
        yield from own(inputs, batch_size)
        return
    for start in range(0, len(inputs), batch_size):
        yield teacher.embed(inputs[start : start + batch_size])


@dataclass
class CacheRun:
    """What one ``get_or_compute`` did: inputs (with repeats), distinct inputs, of which found
    in the cache / embedded now / skipped by the teacher; frames embedded; wall seconds."""

    inputs: int = 0
    distinct: int = 0
    cached: int = 0
    computed: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0


class EmbeddingCache:
    """``get_or_compute(teacher, inputs, batch_size)``: embeddings of inputs, computing only the
    ones never seen (by this or any earlier process) and storing them. See the module docstring."""

    def __init__(self, root: Path | str | None = None, progress: bool = True):
        self.root = Path(root) if root is not None else default_root()
        self.progress = progress
        self.hits = 0
        self.misses = 0
        self.last = CacheRun()
        self._stores: dict[str, TeacherStore] = {}

    def store(self, identity: str) -> TeacherStore:
        if identity not in self._stores:
            self._stores[identity] = TeacherStore(
                self.root / teacher_folder_name(identity), identity
            )
        return self._stores[identity]

    def keys(self, teacher: Any, inputs: Sequence[Any]) -> list[bytes]:
        identity = teacher.identity
        return [input_key(identity, teacher_input_bytes(teacher, x)) for x in inputs]

    def get_or_compute(
        self, teacher: Any, inputs: Sequence[Any], batch_size: int = 64
    ) -> torch.Tensor:
        """(N, D) float32 CPU tensor of ``teacher``'s embeddings of ``inputs``; a row of NaN is an
        input the teacher skipped (nothing is stored for it). ``last`` describes the call."""
        inputs = list(inputs)
        started = time.perf_counter()
        frames_before = getattr(teacher, "frames_embedded", 0)
        store = self.store(teacher.identity)
        store.create()
        store.refresh()
        keys = self.keys(teacher, inputs)
        todo: dict[bytes, int] = {}  # missing key -> first input holding it
        for i, key in enumerate(keys):
            if key not in store.index and key not in todo:
                todo[key] = i
        distinct = len(set(keys))
        computed = self._compute(
            teacher, store, [(k, inputs[i]) for k, i in todo.items()], batch_size
        )
        self._count(store, hits=len(inputs) - len(todo), misses=len(todo))
        self.last = CacheRun(
            inputs=len(inputs),
            distinct=distinct,
            cached=distinct - len(todo),
            computed=computed,
            skipped=len(todo) - computed,
            frames=getattr(teacher, "frames_embedded", 0) - frames_before,
            seconds=time.perf_counter() - started,
        )
        if not inputs:
            return torch.zeros(0, store.dim or teacher.output_size)
        if computed == len(todo):
            return torch.from_numpy(store.read(keys))
        out = torch.full((len(inputs), store.dim or teacher.output_size), float("nan"))
        found = [i for i, key in enumerate(keys) if key in store.index]
        if found:
            out[found] = torch.from_numpy(store.read([keys[i] for i in found]))
        return out

    def _compute(
        self, teacher: Any, store: TeacherStore, todo: list[tuple[bytes, Any]], batch_size: int
    ) -> int:
        """Embed and store ``todo`` batch by batch; returns how many were stored (not skipped)."""
        if not todo:
            return 0
        from tqdm import tqdm

        name = teacher.identity.split("|")[0]
        video = getattr(teacher, "modality", "") == "video"
        stored = 0
        frames_before = getattr(teacher, "frames_embedded", 0)
        with tqdm(
            total=len(todo),
            desc=f"{name} embeddings",
            unit="clip" if video else "input",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        ) as bar:
            batches = _embed_batches(teacher, [x for _, x in todo], batch_size)
            start = 0
            for emb in batches:
                part = todo[start : start + len(emb)]
                start += len(emb)
                rows = emb.detach().float().cpu().numpy()
                ok = np.isfinite(rows).all(axis=1)
                if ok.any():
                    store.write(
                        [k for (k, _), good in zip(part, ok, strict=True) if good], rows[ok]
                    )
                    stored += int(ok.sum())
                store.refresh()
                bar.update(len(part))
                if video and bar.format_dict.get("elapsed"):
                    frames = getattr(teacher, "frames_embedded", 0) - frames_before
                    bar.set_postfix(frames_s=f"{frames / bar.format_dict['elapsed']:.0f}")
        return stored

    def record_hits(self, identity: str, hits: int) -> None:
        """Count ``hits`` lookups answered from the cache (a sharded build plans them itself)."""
        self._count(self.store(identity), hits=hits, misses=0)

    def _count(self, store: TeacherStore, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses
        with locked(self.root / ".lock"):
            stats = _read_json(self.root / "stats.json")
            row = stats.setdefault(
                store.folder.name, {"identity": store.identity, "hits": 0, "misses": 0}
            )
            row["hits"] += hits
            row["misses"] += misses
            _write_atomic(self.root / "stats.json", json.dumps(stats, indent=1).encode())

    def info(self) -> dict[str, Any]:
        """Size, entries per teacher and hit/miss counts (what `primus cache info` prints)."""
        stats = _read_json(self.root / "stats.json")
        teachers = []
        total = 0
        for folder in sorted(p for p in self.root.glob("*") if (p / "identity.txt").exists()):
            identity = (folder / "identity.txt").read_text(encoding="utf-8").strip()
            store = TeacherStore(folder, identity)
            store.refresh()
            size = sum(p.stat().st_size for p in store.shards_dir.glob("*.npy"))
            total += size
            counts = stats.get(folder.name, {})
            teachers.append(
                {
                    "identity": identity,
                    "folder": folder.name,
                    "entries": len(store.index),
                    "shards": len(store._maps),
                    "dim": store.dim,
                    "size_bytes": size,
                    "hits": counts.get("hits", 0),
                    "misses": counts.get("misses", 0),
                }
            )
        return {
            "root": str(self.root),
            "size_bytes": total,
            "teachers": teachers,
            "hits": sum(t["hits"] for t in teachers),
            "misses": sum(t["misses"] for t in teachers),
        }
