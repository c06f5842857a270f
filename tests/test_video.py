"""The video teacher on real video files: tiny lossless H.264 videos whose frames show their own
index (tests/video_tree.py), a tiny randomly initialised CLIP saved to a folder (no network),
span selection and clamping, the reference's frame subsampling and preprocessing, the cache,
missing and unreadable videos, `primus cache build --json`, and the paper's recipes training on
an official-layout EgoExo4D tree with text and video targets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_clip import make_tiny_clip
from video_tree import TAKES, frame_image, frame_index, make_egoexo_tree, write_video

import primus_core
from primus_core.data.cache import EmbeddingCache
from primus_core.errors import DataError
from primus_core.training.trainer import teacher_targets
from primus_teachers.decode import SpanJob, VideoReadError, pick, read_span


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_clip")
    make_tiny_clip(folder)
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """12 s at 30 fps (360 frames), a keyframe every 12 frames."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 12.0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    return make_egoexo_tree(tmp_path_factory.mktemp("egoexo4d"))


def _span(path: Path, start: float | None, end: float | None, fps: float = 10.0, cap=None):
    return read_span(SpanJob(str(path), start, end, fps, cap, 224))


def test_span_frames_come_from_the_window(video):
    got = _span(video, 2.0, 7.0)
    # frames 60..209 (5 s at 30 fps), 50 of them kept as linspace(0, 149, 50) truncated
    expected = [60 + int(k) for k in torch.linspace(0, 149, 50).long()]
    assert got.indices == expected and got.frames.shape == (50, 224, 224, 3)
    # the pixels say which frame of the file each crop came from
    assert [frame_index(f) for f in got.frames] == expected
    # seeking: only the frames from the keyframe before the span on were decoded
    late = _span(video, 9.0, 11.0)
    assert [frame_index(f) for f in late.frames] == late.indices
    assert late.indices[0] == 270 and late.decoded <= 60 + 12 + 2


def test_span_is_clamped_to_the_video(video):
    early = _span(video, -1.5, 3.5)  # a window centred 1 s into the take
    assert (early.start_s, early.end_s) == (0.0, 3.5)
    assert len(early.indices) == 35 and (early.indices[0], early.indices[-1]) == (0, 104)
    assert [frame_index(f) for f in early.frames] == early.indices
    late = _span(video, 10.0, 15.0)
    assert (late.start_s, late.end_s) == (10.0, 12.0) and len(late.indices) == 20
    assert (late.indices[0], late.indices[-1]) == (300, 359)
    whole = _span(video, None, None, fps=1.0)
    assert len(whole.indices) == 12 and whole.indices[-1] == 359
    with pytest.raises(
        VideoReadError, match=r"clip\.mp4: span \[13\.000, 18\.000\] s lies outside"
    ):
        _span(video, 13.0, 18.0)


def test_frame_count_follows_fps_and_max_frames(video):
    assert pick(150, 50)[:4] == [0, 3, 6, 9] and pick(150, 50)[-1] == 149
    assert pick(3, 5) == [0, 0, 1, 1, 2]  # fewer frames than asked: frames repeat
    assert len(_span(video, 2.0, 7.0, fps=2.0).indices) == 10
    assert len(_span(video, 2.0, 7.0, cap=7).indices) == 7


def _reference_embedding(clip_dir: Path, path: Path, start: float, end: float) -> torch.Tensor:
    """What PRIMUS's reference computes: every frame of [int(start*fps), int(end*fps)) read in
    order from the file's start, linspace-subsampled, PIL preprocessing through torchvision's
    Resize/CenterCrop/ToTensor/Normalize, image tower, mean over frames, L2-normalised."""
    import av
    from torchvision import transforms as T
    from transformers import CLIPVisionModelWithProjection

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [f.to_image() for f in container.decode(stream)]
    span = frames[int(start * fps) : int(end * fps)]
    keep = torch.linspace(0, len(span) - 1, int(10 * (end - start))).long()
    prep = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
        ]
    )
    x = torch.stack([prep(span[i]) for i in keep])
    tower = CLIPVisionModelWithProjection.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        mean = tower(pixel_values=x).image_embeds.mean(0)
    return torch.nn.functional.normalize(mean, dim=0)


@pytest.mark.slow
def test_clip_video_embeds_a_span_as_the_reference(clip_dir, video):
    teacher = primus_core.create(
        "teacher", "clip-video", model_id=str(clip_dir), device="cpu", workers=0, frame_batch=16
    )
    record = {"path": str(video), "start_s": 2.0, "end_s": 7.0, "take_uid": "t"}
    emb = teacher.embed([record, str(video)])
    assert emb.shape == (2, 16) and teacher.frames_embedded == 50 + 120
    torch.testing.assert_close(
        emb[0], _reference_embedding(clip_dir, video, 2.0, 7.0), atol=1e-5, rtol=0
    )
    assert not torch.allclose(emb[0], emb[1], atol=1e-3)
    assert "fps10" in teacher.identity and "max0" in teacher.identity
    # decoding in worker processes gives the same embeddings
    pooled = primus_core.create(
        "teacher", "clip-video", model_id=str(clip_dir), device="cpu", workers=2
    )
    torch.testing.assert_close(pooled.embed([record, str(video)]), emb, atol=1e-6, rtol=0)


def test_video_cache_hits_and_file_identity(clip_dir, tmp_path):
    path = write_video(tmp_path / "take.mp4", 8.0)
    teacher = primus_core.create(
        "teacher", "clip-video", model_id=str(clip_dir), device="cpu", workers=0, max_frames=8
    )
    spans = [{"path": str(path), "start_s": s, "end_s": s + 5.0} for s in (0.0, 2.0, 0.0)]
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    first = cache.get_or_compute(teacher, spans)
    assert (cache.last.distinct, cache.last.computed, cache.last.cached) == (2, 2, 0)
    assert cache.last.frames == 16 and torch.equal(first[0], first[2])
    frames = teacher.frames_embedded
    again = EmbeddingCache(tmp_path / "cache", progress=False)
    torch.testing.assert_close(again.get_or_compute(teacher, spans), first)
    assert (again.last.computed, again.last.cached) == (0, 2)
    assert teacher.frames_embedded == frames  # nothing decoded or embedded
    # a replaced video (new size / mtime) is embedded again
    write_video(path, 9.0)
    os.utime(path, ns=(1, 1))
    again.get_or_compute(teacher, spans)
    assert (again.last.computed, again.last.cached) == (2, 0)


def test_missing_video_masked_unreadable_video_error_or_skipped(clip_dir, video, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    videos = [
        {"path": str(video), "start_s": 1.0, "end_s": 6.0},
        {"path": None, "start_s": 1.0, "end_s": 6.0},  # the take has no video file
        {"path": str(bad), "start_s": 1.0, "end_s": 6.0},
        {"path": str(video), "start_s": 4.0, "end_s": 9.0},
    ]
    windows = SimpleNamespace(imu=np.zeros((4, 6, 250), np.float32), videos=videos)
    strict = primus_core.create(
        "teacher", "clip-video", model_id=str(clip_dir), device="cpu", workers=0, max_frames=4
    )
    with pytest.raises(DataError, match=r"broken\.mp4: cannot decode video") as err:
        teacher_targets([strict], windows, progress=False)
    assert "\n" not in str(err.value) and "skip_bad_videos" in str(err.value)
    lenient = primus_core.create(
        "teacher",
        "clip-video",
        model_id=str(clip_dir),
        device="cpu",
        workers=0,
        max_frames=4,
        skip_bad_videos=True,
    )
    emb, mask = teacher_targets([lenient], windows, progress=False)["video"]
    assert mask.tolist() == [True, False, False, True]
    assert torch.isfinite(emb).all() and (emb[1] == 0).all() and (emb[2] == 0).all()
    (reason,) = lenient.skipped
    assert "broken.mp4: cannot decode video" in reason


def _recipe_args(tree: dict, clip_dir: Path) -> list[str]:
    return [
        "--set",
        f"data.pretrain.egoexo4d.root={tree['root']}",
        "--set",
        f"data.pretrain.egoexo4d.imu_dir={tree['imu_dir']}",
        "--set",  # the reference's whole-second windows can share a span; these tests count spans
        "data.pretrain.egoexo4d.windowing=centred",
        "--set",
        f"teachers.clip-text.model_id={clip_dir}",
        "--set",
        f"teachers.clip-video.model_id={clip_dir}",
        "--set",
        "teachers.clip-video.device=cpu",
        "--set",
        "teachers.clip-text.device=cpu",
        "--set",
        "teachers.clip-video.workers=0",  # test_clip_video_embeds... covers worker processes
    ]


@pytest.mark.slow
def test_cache_build_json_figures(cli, tree, clip_dir, tmp_path):
    windows = sum(len(t[5]) for t in TAKES)
    with_video = sum(len(t[5]) for t in TAKES if t[4])
    args = ["cache", "build", "primus", *_recipe_args(tree, clip_dir), "--root", tmp_path]
    first = {r["teacher"]: r for r in json.loads(cli(*args, "--json").out)}
    text, video = first["clip-text"], first["clip-video"]
    assert (text["modality"], video["modality"]) == ("text", "video")
    assert text["windows"] == video["windows"] == windows
    assert text["with_input"] == windows and video["with_input"] == with_video
    assert video["distinct"] == video["computed"] == with_video  # every window its own span
    assert (video["cached"], video["skipped"]) == (0, 0)
    assert video["inputs_per_s"] > 0 and video["frames_per_s"] > video["inputs_per_s"]
    second = {r["teacher"]: r for r in json.loads(cli(*args, "--json").out)}
    assert (second["clip-video"]["computed"], second["clip-video"]["cached"]) == (0, with_video)
    assert (second["clip-text"]["computed"], second["clip-text"]["cached"]) == (
        0,
        text["distinct"],
    )
    # human output, decoding in a worker process this time
    human = cli(*args[:-2], "--root", tmp_path / "fresh", "--set", "teachers.1.workers=1").out
    assert "clip-video" in human and "clips/s" in human and "frames/s" in human


def test_cache_build_bad_video_error_or_skipped(cli, tree, clip_dir, tmp_path):
    root = tmp_path / "egoexo4d"
    shutil.copytree(tree["root"], root)
    broken = root / "takes" / TAKES[0][1] / "frame_aligned_videos" / "aria01_214-1.mp4"
    # unreadable for a while, with the same size and mtime (so the same cache keys) as when fixed
    good, stamp = broken.read_bytes(), broken.stat().st_mtime_ns
    broken.write_bytes(bytes(len(good)))
    os.utime(broken, ns=(stamp, stamp))
    args = [
        "cache",
        "build",
        "primus",
        *_recipe_args({"root": root, "imu_dir": root / "imu"}, clip_dir),
        "--root",
        tmp_path / "cache",
    ]
    failed = cli(*args, "--json", expect=1)
    assert "error:" in failed.err and "aria01_214-1.mp4: cannot decode video" in failed.err
    assert "Traceback" not in failed.err
    rows = {r["teacher"]: r for r in json.loads(cli(*args, "--skip-bad-videos", "--json").out)}
    video = rows["clip-video"]
    assert video["skipped"] == len(TAKES[0][5]) and video["computed"] == len(TAKES[1][5])
    ((reason, count),) = video["skip_reasons"].items()
    assert count == video["skipped"] and reason.startswith(f"{broken}: cannot decode video (")
    assert video["distinct"] == video["computed"] + video["cached"] + video["skipped"]
    assert video["identity"].startswith("clip-video|local:")
    assert video["identity"].endswith("|fps10|src10|max0|pre1")
    text = rows["clip-text"]  # embedded by the failed run: nothing computed, no rates
    assert text["identity"].startswith("clip-text|local:") and text["identity"].endswith(
        "|len77|pre1"
    )
    assert (text["computed"], text["inputs_per_s"], text["frames_per_s"]) == (0, None, None)
    # skipped clips were not cached: once the file reads, a later run embeds exactly them
    broken.write_bytes(good)
    os.utime(broken, ns=(stamp, stamp))
    rows = {r["teacher"]: r for r in json.loads(cli(*args, "--skip-bad-videos", "--json").out)}
    video = rows["clip-video"]
    assert (video["computed"], video["cached"], video["skipped"]) == (
        len(TAKES[0][5]),
        len(TAKES[1][5]),
        0,
    )
    assert video["skip_reasons"] == {} and video["frames_per_s"] > 0


@pytest.mark.parametrize("recipe", ["primus", "primus-ss-mm", "imu2clip"])
def test_paper_recipes_train_with_text_and_video(cli, tree, clip_dir, tmp_path, recipe):
    out = tmp_path / "run"
    cli(
        "train",
        recipe,
        *_recipe_args(tree, clip_dir),
        "--set",
        "train.batch_size=4",
        "--set",
        "data.val_fraction=0",
        "--set",
        "train.log_every=1",
        "--max-steps",
        "3",
        "--device",
        "cpu",
        "--out",
        out,
        "--no-progress",
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    terms = set().union(*steps)
    assert any("video" in k for k in terms) and any("text" in k for k in terms), terms
    if recipe == "primus":
        assert {"nn/video", "nn/text"} <= terms, terms  # the queue held both after step 1
    config = json.loads((out / "model" / "config.json").read_text())
    identities = " ".join(config["teachers"])
    assert "clip-text|local:" in identities and "clip-video|local:" in identities


def test_a_skipped_clip_is_not_cached_and_is_tried_again(clip_dir, tmp_path):
    other = write_video(tmp_path / "other.mp4", 6.0)
    path = write_video(tmp_path / "take.mp4", 6.0)
    good, stamp = path.read_bytes(), path.stat().st_mtime_ns
    spans = [{"path": str(p), "start_s": 0.0, "end_s": 5.0} for p in (other, path)]
    made = dict(model_id=str(clip_dir), device="cpu", workers=0, max_frames=4)
    direct = primus_core.create("teacher", "clip-video", **made).embed(spans)  # both readable
    # unreadable for a while: zeros of the same size, the same mtime (so the same cache key)
    path.write_bytes(bytes(len(good)))
    os.utime(path, ns=(stamp, stamp))
    teacher = primus_core.create("teacher", "clip-video", **made, skip_bad_videos=True)
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    keys = cache.keys(teacher, spans)
    first = cache.get_or_compute(teacher, spans)
    assert (cache.last.computed, cache.last.skipped) == (1, 1)
    assert torch.isnan(first[1]).all() and len(teacher.skipped) == 1
    torch.testing.assert_close(first[0], direct[0], atol=1e-6, rtol=0)
    assert cache.info()["teachers"][0]["entries"] == 1  # nothing stored for the skipped clip
    path.write_bytes(good)  # readable again
    os.utime(path, ns=(stamp, stamp))
    later = EmbeddingCache(tmp_path / "cache", progress=False)
    assert later.keys(teacher, spans) == keys
    again = later.get_or_compute(teacher, spans)
    assert (later.last.computed, later.last.cached, later.last.skipped) == (1, 1, 0)
    torch.testing.assert_close(again, direct, atol=1e-6, rtol=0)


def test_frames_folder_is_read_in_name_order_and_an_image_is_one_frame(clip_dir, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    # by name: 10.png < 100.png < 9.png (numeric or creation order would keep other frames)
    for name, index in (("9.png", 9), ("100.png", 100), ("10.png", 10)):
        Image.fromarray(frame_image(index * 7)).save(folder / name)
    (folder / "notes.txt").write_text("not a frame")
    teacher = primus_core.create(
        "teacher", "clip-video", model_id=str(clip_dir), device="cpu", max_frames=2
    )
    # max_frames 2 of 3 keeps the first and the last by name: 10.png and 9.png
    want = [frame_image(10 * 7), frame_image(9 * 7)]
    emb, as_list, by_number = teacher.embed(
        [folder, want, [frame_image(9 * 7), frame_image(100 * 7)]]
    )
    torch.testing.assert_close(emb, as_list, atol=1e-6, rtol=0)
    assert not torch.allclose(emb, by_number, atol=1e-4)
    # a path to one image is a one-frame clip
    one, frame = teacher.embed([folder / "100.png", [frame_image(100 * 7)]])
    torch.testing.assert_close(one, frame, atol=1e-6, rtol=0)
    assert not torch.allclose(one, emb, atol=1e-4)
    # renaming or moving a frames folder keeps its key
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "renamed")
    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    assert cache.keys(teacher, [moved]) == cache.keys(teacher, [folder])
    assert cache.keys(teacher, [str(moved)]) == cache.keys(teacher, [folder])


def test_each_decoding_worker_gets_cpus_over_workers_threads(clip_dir, video, monkeypatch):
    import primus_teachers.video as video_module

    real = video_module.ordered_map
    seen = []

    def spy(fn, jobs, workers, *rest):
        jobs = list(jobs)
        seen.append((workers, [job.threads for job in jobs]))
        return real(fn, jobs, 0)  # decoded here: what is checked is what the workers are given

    monkeypatch.setattr(video_module, "ordered_map", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    spans = [{"path": str(video), "start_s": s, "end_s": s + 2.0} for s in (0.0, 3.0, 6.0)]
    made = dict(model_id=str(clip_dir), device="cpu", max_frames=2)
    primus_core.create("teacher", "clip-video", **made, workers=2).embed(spans)
    # none = CPUs - 1 = 7 workers (3 processes for 3 clips), 8 // 7 = 1 thread each
    primus_core.create("teacher", "clip-video", **made).embed(spans)
    assert seen == [(2, [4, 4, 4]), (3, [1, 1, 1])]
