"""Video clips as frames: reading (a list of frames, a frames folder, an image), sampling to the
teacher's frame rate, CLIP-style preprocessing, and the frame-averaging video teacher base."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from primus_core.cache import path_digest
from primus_core.errors import DataError

from .base import Teacher, TeacherConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


class FrameTeacherConfig(TeacherConfig):
    fps: float = Field(10.0, gt=0, description="frame rate the clip is embedded at")
    source_fps: float | None = Field(
        None, gt=0, description="rate of the given frames; None: already at fps"
    )
    max_frames: int | None = Field(
        None, gt=0, description="at most this many frames per clip (evenly spaced)"
    )
    frame_batch: int = Field(64, gt=0, description="frames per forward pass of the image tower")


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
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise DataError(
                f"{path}: video files are not decoded here; extract frames to a folder "
                f"(ffmpeg -i {path.name} -vf fps=10 frames/%06d.jpg) and pass the folder"
            )
        return [path]
    if isinstance(clip, np.ndarray) and clip.ndim == 4:
        clip = list(clip)
    if isinstance(clip, torch.Tensor) and clip.ndim == 4:
        clip = list(clip)
    if not isinstance(clip, (list, tuple)) or not clip:
        raise DataError(
            "a video input must be a non-empty list of uint8 H x W x 3 frames, a (T, H, W, 3) "
            f"array, or a path to a frames folder; got {type(clip).__name__}"
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


def preprocess(
    frame: torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, size, size): bicubic resize of the short side, centre crop,
    scale to [0, 1], normalise with mean/std."""
    from torchvision.transforms.v2 import functional as TF

    frame = frame.to(device)
    frame = TF.resize(frame, [size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    frame = TF.center_crop(frame, [size, size])
    x = frame.float().div_(255.0)
    mean_t = torch.tensor(mean, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, device=device).view(3, 1, 1)
    return (x - mean_t) / std_t


class FrameTeacher(Teacher):
    """A video teacher that embeds each frame with an image tower and averages the frames.
    Subclasses set ``image_size``, ``mean``, ``std`` in ``_load()`` and implement
    ``_embed_frames(x: float (F, 3, S, S)) -> (F, D)``."""

    modality = "video"
    image_size: int = 224
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def input_bytes(self, clip: Any) -> bytes:
        """Canonical bytes of a clip for the embedding cache (content of files, not their path)."""
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

    def _embed_batch(self, batch: list[Any]) -> torch.Tensor:
        c = self.config
        owners: list[int] = []
        frames: list[Any] = []
        for i, clip in enumerate(batch):
            all_frames = read_clip(clip)
            for j in sample_indices(len(all_frames), c.fps, c.source_fps, c.max_frames):
                owners.append(i)
                frames.append(all_frames[j])
        sums = None
        counts = torch.zeros(len(batch))
        for start in range(0, len(frames), c.frame_batch):
            part = frames[start : start + c.frame_batch]
            x = torch.stack([self._prepare(f) for f in part])
            emb = self._embed_frames(x).float().cpu()
            if sums is None:
                sums = torch.zeros(len(batch), emb.shape[1])
            who = torch.tensor(owners[start : start + c.frame_batch])
            sums.index_add_(0, who, emb)
            counts.index_add_(0, who, torch.ones(len(part)))
        assert sums is not None
        return sums / counts.clamp(min=1).unsqueeze(1)

    def _prepare(self, frame: Any) -> torch.Tensor:
        tensor = frame if isinstance(frame, torch.Tensor) else _read_image(frame)
        return preprocess(tensor, self.image_size, self.mean, self.std, self.device)

    def _embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
