"""Video clips as frames: a span of a video file (decoded by ``decode.py`` in worker
processes), a list of frames, a frames folder or an image; sampling to the teacher's frame rate,
CLIP-style preprocessing, and the frame-averaging video teacher base."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from primus_core.data.cache import path_digest
from primus_core.errors import DataError

from .base import Teacher, l2_normalise
from .config import FrameTeacherConfig
from .decode import (
    VIDEO_SUFFIXES,
    Decoded,
    SpanJob,
    decoder_threads,
    default_workers,
    load_span,
    ordered_map,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def _as_frame(frame: Any, where: str) -> torch.Tensor:
    """One frame as uint8 (3, H, W)."""
    array = frame.numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.dtype != np.uint8:
        raise DataError(f"{where}: frames must be uint8 H x W x 3 arrays, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise DataError(f"{where}: frames must be H x W x 3 arrays, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array[:, :, :3])).permute(2, 0, 1)


def _read_image(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from None


def frame_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the frames folder"
        )
    return files


def read_clip(clip: Any) -> list[torch.Tensor] | list[Path]:
    """The frames of one clip: uint8 (3, H, W) tensors, or image paths (decoded later)."""
    if isinstance(clip, (str, os.PathLike)):
        path = Path(clip)
        if path.is_dir():
            return frame_files(path)
        if not path.exists():
            raise DataError(f"{path}: no such video frames folder or image")
        return [path]
    if isinstance(clip, np.ndarray) and clip.ndim == 4:
        clip = list(clip)
    if isinstance(clip, torch.Tensor) and clip.ndim == 4:
        clip = list(clip)
    if not isinstance(clip, (list, tuple)) or not clip:
        raise DataError(
            "a video input must be a video record {path, start_s, end_s}, a video file, a "
            "non-empty list of uint8 H x W x 3 frames, a (T, H, W, 3) array, or a path to a "
            f"frames folder; got {type(clip).__name__}"
        )
    return [_as_frame(f, f"frame {i}") for i, f in enumerate(clip)]


def sample_indices(
    n: int, fps: float, source_fps: float | None, max_frames: int | None
) -> list[int]:
    """Frames kept from n: resampled from source_fps to fps, then at most max_frames, evenly."""
    if source_fps is None or source_fps == fps:
        idx = np.arange(n)
    else:
        count = max(1, int(np.floor(n * fps / source_fps + 1e-9)))
        idx = np.minimum(np.round(np.arange(count) * source_fps / fps).astype(int), n - 1)
    if max_frames is not None and idx.size > max_frames:
        idx = idx[np.linspace(0, idx.size - 1, max_frames).round().astype(int)]
    return idx.tolist()


def crop_frame(frame: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, size, size): bicubic resize of the short side, centre crop."""
    from torchvision.transforms.v2 import functional as TF

    frame = frame.to(device)
    frame = TF.resize(frame, [size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(frame, [size, size])


def normalise(
    crops: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device
) -> torch.Tensor:
    """uint8 (..., 3, S, S) -> float: scale to [0, 1], normalise with mean/std."""
    x = crops.to(device).float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, device=device).view(3, 1, 1)
    return (x - mean_t) / std_t


def preprocess(
    frame: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, size, size): crop_frame then normalise."""
    return normalise(crop_frame(frame, size, device), mean, std, device)


def video_span(clip: Any) -> tuple[str, float | None, float | None] | None:
    """(path, start_s, end_s) when a clip is a video file or a dataset's video record
    ``{path, start_s, end_s, ...}``; None for frames, folders and images."""
    if isinstance(clip, dict):
        if "path" not in clip:
            raise DataError(f"a video record needs a 'path' (and start_s, end_s); got {clip}")
        if clip["path"] is None:
            raise DataError("a video record with path None has no video (mask it instead)")
        return str(clip["path"]), clip.get("start_s"), clip.get("end_s")
    if isinstance(clip, (str, os.PathLike)) and Path(clip).suffix.lower() in VIDEO_SUFFIXES:
        return str(clip), None, None
    return None


def file_identity(path: str) -> str:
    """path, size and mtime of a video file (a replaced file gets a new identity)."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{os.path.abspath(path)}|missing"
    return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"


class _FrameAverager:
    """Streams clips' crops through the image tower in frame_batch chunks; per-clip means."""

    def __init__(self, teacher: FrameTeacher, clips: int):
        self.teacher = teacher
        self.sums = torch.zeros(clips, teacher.output_size)
        self.counts = torch.zeros(clips)
        self.crops: list[torch.Tensor] = []
        self.owners: list[int] = []

    def add(self, clip: int, crops: torch.Tensor) -> None:
        self.crops.extend(crops)
        self.owners.extend([clip] * len(crops))
        batch = self.teacher.config.frame_batch
        while len(self.crops) >= batch:
            self._flush(batch)

    def _flush(self, n: int) -> None:
        t = self.teacher
        x = normalise(torch.stack(self.crops[:n]), t.mean, t.std, t.device)
        with torch.inference_mode():
            emb = t._embed_frames(x).float().cpu()
        who = torch.tensor(self.owners[:n])
        self.sums.index_add_(0, who, emb)
        self.counts.index_add_(0, who, torch.ones(n))
        t.frames_embedded += n
        del self.crops[:n], self.owners[:n]

    def means(self) -> torch.Tensor:
        if self.crops:
            self._flush(len(self.crops))
        out = self.sums / self.counts.clamp(min=1).unsqueeze(1)
        out[self.counts == 0] = float("nan")  # a skipped clip
        return out


class FrameTeacher(Teacher):
    """A video teacher that embeds each frame with an image tower and averages the frames.
    Subclasses set ``image_size``, ``mean``, ``std`` in ``_load()`` and implement
    ``_embed_frames(x: float (F, 3, S, S)) -> (F, D)``.

    Video files are decoded in ``workers`` processes running ahead of the model. A clip that
    cannot be read raises DataError, or with ``skip_bad_videos`` gives a row of NaN (callers mask
    it) and its reason in ``skipped``."""

    modality = "video"
    config: FrameTeacherConfig
    image_size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __init__(self, config: FrameTeacherConfig):
        super().__init__(config)
        self.frames_embedded = 0
        self.skipped: list[str] = []

    def has_input(self, clip: Any) -> bool:
        if isinstance(clip, dict):
            return clip.get("path") is not None
        return super().has_input(clip)

    def input_bytes(self, clip: Any) -> bytes:
        """Canonical bytes of a clip for the embedding cache: a video span by the file's identity
        (path, size, mtime) and the span; frames folders by content; frames by pixels."""
        span = video_span(clip)
        if span is not None:
            path, start, end = span
            return f"video:{file_identity(path)}|{start!r}|{end!r}".encode()
        if isinstance(clip, (str, os.PathLike)):
            return b"path:" + path_digest(Path(clip), IMAGE_SUFFIXES).encode()
        digest = [b"frames:"]
        for i, frame in enumerate(read_clip(clip)):
            t = frame if isinstance(frame, torch.Tensor) else _read_image(frame)
            digest.append(f"{i}:{tuple(t.shape)}:".encode() + t.contiguous().numpy().tobytes())
        return b"".join(digest)

    def _frame_params(self) -> str:
        c = self.config
        return f"fps{c.fps:g}|src{c.source_fps or c.fps:g}|max{c.max_frames or 0}"

    def embed_batches(self, inputs: Sequence[Any], batch_size: int | None = None):
        """L2-normalised (b, D) embeddings per ``batch_size`` clips, in order; decoding of later
        clips overlaps with the model."""
        inputs = list(inputs)
        size = batch_size or self.config.batch_size
        self.load()
        crops = self._crops(inputs)
        try:
            for start in range(0, len(inputs), size):
                part = inputs[start : start + size]
                averager = _FrameAverager(self, len(part))
                for i in range(len(part)):
                    clip = next(crops)
                    if clip is not None:
                        averager.add(i, clip)
                yield l2_normalise(averager.means()).cpu()
        finally:
            crops.close()

    def _crops(self, inputs: list[Any]) -> Iterator[torch.Tensor | None]:
        """Per input: uint8 (F, 3, S, S) crops of its sampled frames, or None (skipped)."""
        c = self.config
        spans = [video_span(x) for x in inputs]
        workers = default_workers() if c.workers is None else c.workers
        threads = decoder_threads(workers)
        jobs = [
            SpanJob(s[0], s[1], s[2], c.fps, c.max_frames, self.image_size, threads)
            for s in spans
            if s is not None
        ]
        decoded = ordered_map(load_span, jobs, min(workers, len(jobs)))
        try:
            for clip, span in zip(inputs, spans, strict=True):
                if span is None:
                    frames = read_clip(clip)
                    keep = sample_indices(len(frames), c.fps, c.source_fps, c.max_frames)
                    yield torch.stack([self._crop(frames[j]) for j in keep])
                    continue
                result = next(decoded)
                if isinstance(result, Decoded):
                    yield torch.from_numpy(result.frames).permute(0, 3, 1, 2)
                elif c.skip_bad_videos:
                    self.skipped.append(result)
                    yield None
                else:
                    raise DataError(result + " (skip such windows with skip_bad_videos=true)")
        finally:
            decoded.close()

    def _crop(self, frame: Any) -> torch.Tensor:
        tensor = frame if isinstance(frame, torch.Tensor) else _read_image(frame)
        return crop_frame(tensor, self.image_size, self.device)

    def _embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
