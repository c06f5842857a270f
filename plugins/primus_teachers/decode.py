"""Video files: the frames of a time span, decoded with PyAV (seeking, never the whole file),
chosen and cropped the way PRIMUS's reference computes its CLIP4Clip targets, in worker processes
that run ahead of the model.

The reference (``get_video_frames`` of the PRIMUS code) clamps the span to ``[0, frames / fps]``,
takes the frames ``int(start * fps) .. int(end * fps) - 1``, keeps
``linspace(0, n - 1, target_fps * seconds)`` of those ``n`` (truncated to integers), and gives each
kept frame CLIP's preprocessing: PIL bicubic resize of the short side to 224, centre crop 224,
[0, 1], CLIP mean/std. Here the workers return the uint8 crops; the teacher normalises them on
its device."""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
FRAME_EPS = 1e-6  # 2.9 s * 30 fps is 86.99999999999999 in floats: frame 87, not 86


@dataclass(frozen=True)
class SpanJob:
    """One clip to read: a file, a span in seconds (None: its start / end), and how to sample."""

    path: str
    start_s: float | None
    end_s: float | None
    fps: float  # frames kept per second of (clamped) span
    max_frames: int | None
    size: int  # crop side
    threads: int = 0  # decoder threads (0: FFmpeg's choice)


@dataclass
class Decoded:
    """The kept frames of a span: uint8 (F, size, size, 3) crops and their frame numbers."""

    frames: np.ndarray
    indices: list[int]
    video_fps: float
    start_s: float  # the span after clamping to the video
    end_s: float
    decoded: int  # frames the decoder produced (from the keyframe before the span to its end)


class VideoReadError(Exception):
    """A video that cannot be opened or decoded, or a span outside it (message names the file)."""


def span_frames(
    start_s: float | None, end_s: float | None, video_fps: float, n_frames: int, where: str
) -> tuple[int, int, float, float]:
    """(first frame, stop frame, clamped start s, clamped end s) of a span, as the reference
    clamps it: to [0, n_frames / fps]."""
    length = n_frames / video_fps
    start = 0.0 if start_s is None else max(0.0, float(start_s))
    end = length if end_s is None else min(float(end_s), length)
    if not start < end:
        raise VideoReadError(
            f"{where}: span [{_fmt(start_s)}, {_fmt(end_s)}] s lies outside the video "
            f"(0 to {length:.3f} s)"
        )
    first = math.floor(start * video_fps + FRAME_EPS)
    stop = min(math.floor(end * video_fps + FRAME_EPS), n_frames)
    if stop <= first:
        raise VideoReadError(f"{where}: span [{start:.3f}, {end:.3f}] s holds no whole frame")
    return first, stop, start, end


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.3f}"


def frame_count(fps: float, seconds: float, max_frames: int | None) -> int:
    """Frames kept for a span: fps * seconds (50 for 5 s at 10 fps), at least 1, at most max."""
    count = max(1, round(fps * seconds))
    return min(count, max_frames) if max_frames else count


def pick(n: int, count: int) -> list[int]:
    """The reference's subsampling of n frames to count: linspace(0, n - 1, count), truncated
    (torch float32, as the reference computes it; frames repeat when count > n)."""
    import torch

    return torch.linspace(0, n - 1, count).long().tolist()


def crop(image: Any, size: int) -> np.ndarray:
    """torchvision's Resize(size, BICUBIC) + CenterCrop(size) on a PIL image (the reference's
    preprocessing before ToTensor): uint8 (size, size, 3)."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_long = int(size * long / short)
        new = (size, new_long) if w <= h else (new_long, size)
        image = image.resize(new, Image.BICUBIC)
        w, h = image.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)).convert("RGB"))


def _video_stream(container: Any, where: str) -> tuple[Any, float, int, int]:
    """(stream, fps, frames, start pts) of the first video stream."""
    stream = next((s for s in container.streams if s.type == "video"), None)
    if stream is None:
        raise VideoReadError(f"{where}: no video stream")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoReadError(f"{where}: the video stream has no frame rate")
    fps = float(rate)
    n = int(stream.frames or 0)
    if n <= 0:  # containers without a frame count: from the duration
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            raise VideoReadError(f"{where}: the video has neither a frame count nor a duration")
        n = int(round(seconds * fps))
    return stream, fps, n, int(stream.start_time or 0)


def _decode_wanted(
    container: Any,
    stream: Any,
    fps: float,
    t0: int,
    first: int,
    stop: int,
    wanted: set[int],
    size: int,
    seek: bool = True,
) -> tuple[dict[int, np.ndarray], int, int]:
    """Decode frames first..stop-1 (seeking to the keyframe before ``first``); keep the crops of
    ``wanted`` (cropped at once: full frames would take 6 MB each). Returns (crops, frames in the
    span, frames decoded)."""
    tb = stream.time_base
    if seek and first > 0:
        container.seek(t0 + int(first / fps / tb), stream=stream, backward=True)
    images: dict[int, Any] = {}
    seen = decoded = 0
    for i, frame in enumerate(container.decode(stream)):
        decoded += 1
        pts = frame.pts if frame.pts is not None else frame.dts
        index = round(float((pts - t0) * tb) * fps) if pts is not None else i
        if seek and i == 0 and index > first > 0:  # landed past the span: read from the start
            container.seek(t0, stream=stream, backward=True)
            return _decode_wanted(container, stream, fps, t0, first, stop, wanted, size, False)
        if index < first:
            continue
        if index >= stop:
            break
        seen += 1
        if index in wanted:
            images[index] = crop(frame.to_image(), size)
    return images, seen, decoded


def read_span(job: SpanJob) -> Decoded:
    """The kept frames of one span of one video file (raises VideoReadError)."""
    import av

    where = job.path
    if not os.path.isfile(job.path):
        raise VideoReadError(f"{where}: no such video file")
    try:
        with av.open(job.path) as container:
            stream, fps, n_frames, t0 = _video_stream(container, where)
            stream.thread_type = "AUTO"
            stream.thread_count = job.threads
            first, stop, start, end = span_frames(job.start_s, job.end_s, fps, n_frames, where)
            count = frame_count(job.fps, end - start, job.max_frames)
            indices = [first + k for k in pick(stop - first, count)]
            images, seen, decoded = _decode_wanted(
                container, stream, fps, t0, first, stop, set(indices), job.size
            )
            if seen == 0:
                raise VideoReadError(f"{where}: no frame could be decoded in [{start}, {end}] s")
            if seen < stop - first:  # the header promised more frames than the file holds
                indices = [first + k for k in pick(seen, count)]
                stop = first + seen
                images, _, more = _decode_wanted(
                    container, stream, fps, t0, first, stop, set(indices), job.size
                )
                decoded += more
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)  # FFmpeg's text repeats the path
        raise VideoReadError(
            f"{where}: cannot decode video ({type(exc).__name__}: {detail})"
        ) from None
    missing = sorted(set(indices) - set(images))
    if missing:
        raise VideoReadError(f"{where}: frames {missing[:5]} could not be decoded")
    return Decoded(np.stack([images[i] for i in indices]), indices, fps, start, end, decoded)


def load_span(job: SpanJob) -> Decoded | str:
    """read_span for a worker: a failure comes back as its message (never as a traceback)."""
    try:
        return read_span(job)
    except VideoReadError as exc:
        return str(exc)


# --------------------------------------------------------------------------- workers
def default_workers() -> int:
    """One decoding process per CPU but one (left to the main process), at most 32."""
    return max(1, min(32, (os.cpu_count() or 1) - 1))


def decoder_threads(workers: int) -> int:
    """Decoder threads per process so that all processes together use about every CPU."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def ordered_map(
    fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ahead: int | None = None
) -> Iterator[Any]:
    """fn over items, in order; with workers > 0 in that many processes, at most ``ahead`` items
    in flight (so decoding runs ahead of the consumer without holding the whole corpus)."""
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    ahead = ahead or 2 * workers + 2
    # forkserver: workers fork from a clean server process, never from a parent holding a model,
    # CUDA or threads; the server imports this module once.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context)
    pending: deque[Future] = deque()
    it = iter(items)
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            done = pending.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()
