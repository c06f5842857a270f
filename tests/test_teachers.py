"""Teachers: CLIP text/video and timm video loaded through the real from_pretrained / timm hf-hub
path from a local Hub (olah on loopback) serving tiny randomly initialised models made here;
MiniLM offline on real sentences; video inputs as frame lists, arrays and frames folders of real
photos (scikit-image); `primus cache build` on the embedded-default recipe."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hubserver import local_hub  # noqa: F401  (session fixture)
from skimage import data as photos
from tiny_clip import make_tiny_clip

import primus_core
from primus_core.data.cache import EmbeddingCache
from primus_core.errors import DataError, PrimusError

REPO = Path(__file__).resolve().parent.parent
CLIP_REPO = "primus-tests/tiny-clip"
TIMM_REPO = "primus-tests/tiny-timm"


def make_tiny_timm(folder: Path) -> None:
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_vit", pretrained=False, num_classes=24), folder)


HUB_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from pathlib import Path
    from skimage import data as photos
    from transformers import CLIPVisionModelWithProjection
    import primus_core
    from primus_core.errors import PrimusError

    clip_sha, timm_sha, frames_dir, out = sys.argv[1:5]
    res = {}
    text = primus_core.create("teacher", "clip-text", model_id="%(clip)s", revision=clip_sha)
    video = primus_core.create("teacher", "clip-video", model_id="%(clip)s", revision=clip_sha,
                               frame_batch=2)
    res["text_identity"], res["video_identity"] = text.identity, video.identity
    res["text_size"], res["video_size"] = text.output_size, video.output_size
    texts = ["a man rides a bike", "a man rides a bike", "the cooking and the dancing"]
    arrays = {"text": text.embed(texts).numpy()}
    a, c, k = photos.astronaut(), photos.coffee(), photos.chelsea()
    arrays["video"] = video.embed([[a, c], [k], np.stack([a, a, a]), frames_dir]).numpy()
    # the reference: the same checkpoint's vision tower, frame by frame, mean then normalise
    tower = CLIPVisionModelWithProjection.from_pretrained("%(clip)s", revision=clip_sha).eval()
    from primus_teachers.video import preprocess, _as_frame
    from primus_teachers.clip import CLIP_MEAN, CLIP_STD
    with torch.no_grad():
        px = torch.stack([preprocess(_as_frame(f, ""), 224, CLIP_MEAN, CLIP_STD, torch.device("cpu"))
                          for f in (a, c)])
        ref = tower(pixel_values=px).image_embeds.mean(0)
    arrays["reference"] = torch.nn.functional.normalize(ref, dim=0).numpy()
    timm_video = primus_core.create("teacher", "timm-video", model_name="hf-hub:%(timm)s",
                                    revision=timm_sha)
    res["timm_identity"], res["timm_size"] = timm_video.identity, timm_video.output_size
    arrays["timm"] = timm_video.embed([[a, c], [k]]).numpy()
    try:
        primus_core.create("teacher", "clip-text", model_id="primus-tests/no-such-model", revision=clip_sha).output_size
    except PrimusError as exc:
        res["bad_revision"] = str(exc)
    np.savez(Path(out) / "arrays.npz", **arrays)
    (Path(out) / "result.json").write_text(json.dumps(res))
    """
)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """A frames folder of PNGs (lossless) holding the astronaut then the coffee photo."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    Image.fromarray(photos.astronaut()).save(folder / "000001.png")
    Image.fromarray(photos.coffee()).save(folder / "000002.png")
    (folder / "notes.txt").write_text("not a frame")
    return folder


@pytest.fixture(scope="module")
def hub_run(local_hub, frames_dir, tmp_path_factory):  # noqa: F811
    """Publish the tiny models to the local Hub and run the teachers in a fresh process."""
    work = tmp_path_factory.mktemp("hub_models")
    make_tiny_clip(work / "clip")
    make_tiny_timm(work / "timm")
    clip_sha = local_hub.add_repo(CLIP_REPO, work / "clip")
    timm_sha = local_hub.add_repo(TIMM_REPO, work / "timm")
    out = work / "out"
    out.mkdir()
    script = HUB_SCRIPT % {"clip": CLIP_REPO, "timm": TIMM_REPO}
    done = subprocess.run(
        [sys.executable, "-c", script, clip_sha, timm_sha, str(frames_dir), str(out)],
        env=local_hub.env(PRIMUS_STRICT_PLUGINS="1", PRIMUS_HOME=str(work / "home")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:] + "\nolah:\n" + local_hub.log_tail()
    result = json.loads((out / "result.json").read_text())
    result.update(clip_sha=clip_sha, timm_sha=timm_sha, hf_home=local_hub.hf_home)
    return result, dict(np.load(out / "arrays.npz"))


def test_hook_register_teachers_registers_the_four_teachers():
    comps = {c.name: c for c in primus_core.list_components("teacher")}
    assert {"clip-text", "clip-video", "timm-video", "minilm-text"} <= set(comps)
    assert {comps[n].plugin for n in ("clip-text", "minilm-text")} == {"teachers"}
    params = {p["name"]: p["default"] for p in comps["clip-video"].params()}
    assert params["model_id"] == "Searchium-ai/clip4clip-webvid150k"
    assert params["fps"] == 10.0 and params["device"] == "auto"
    # creating a teacher loads nothing: the identity is known before any download
    teacher = primus_core.create("teacher", "clip-text")
    assert teacher.modality == "text" and not teacher._loaded
    assert teacher.identity.startswith("clip-text|Searchium-ai/clip4clip-webvid150k@")


@pytest.mark.slow
def test_clip_text_from_local_hub(hub_run):
    result, arrays = hub_run
    emb = arrays["text"]
    assert result["text_size"] == 16 and emb.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)  # same text, same embedding
    assert not np.allclose(emb[0], emb[2], atol=1e-3)
    assert result["text_identity"] == f"clip-text|{CLIP_REPO}@{result['clip_sha']}|len77|pre1"
    # the weights came through the Hub client into its cache, at the pinned commit
    snapshot = result["hf_home"] / "hub" / "models--primus-tests--tiny-clip" / "snapshots"
    assert (snapshot / result["clip_sha"] / "model.safetensors").is_file()


def test_clip_video_averages_frames(hub_run):
    result, arrays = hub_run
    emb = arrays["video"]
    assert result["video_size"] == 16 and emb.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # [astronaut, coffee] = normalise(mean(tower(astronaut), tower(coffee)))
    np.testing.assert_allclose(emb[0], arrays["reference"], atol=1e-5)
    # the frames folder (PNG, lossless) holds the same two photos
    np.testing.assert_allclose(emb[3], emb[0], atol=1e-5)
    assert not np.allclose(emb[0], emb[1], atol=1e-3)
    assert "fps10" in result["video_identity"]


def test_timm_video_from_local_hub(hub_run):
    result, arrays = hub_run
    assert result["timm_size"] == 24 and arrays["timm"].shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(arrays["timm"], axis=1), 1.0, atol=1e-5)
    assert f"hf-hub:{TIMM_REPO}@{result['timm_sha']}" in result["timm_identity"]


def test_unknown_revision_is_one_line_error(hub_run):
    result, _ = hub_run
    assert "cannot load CLIP checkpoint" in result["bad_revision"]
    assert "\n" not in result["bad_revision"]


def test_identity_is_stable_across_processes(hub_run):
    result, _ = hub_run
    here = primus_core.create(
        "teacher", "clip-text", model_id=CLIP_REPO, revision=result["clip_sha"]
    )
    assert here.identity == result["text_identity"]  # no model load needed for the identity


def test_clip_preprocessing_matches_transformers():
    from transformers import CLIPImageProcessor

    from primus_teachers.clip import CLIP_MEAN, CLIP_STD
    from primus_teachers.video import _as_frame, preprocess

    image = photos.chelsea()  # 300 x 451: resized on the short side, then centre-cropped
    ours = preprocess(_as_frame(image, "x"), 224, CLIP_MEAN, CLIP_STD, torch.device("cpu"))
    ref = CLIPImageProcessor()(images=image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == ref.shape == (3, 224, 224)
    assert (ours - ref).abs().max() < 1e-4


def test_frame_sampling():
    from primus_teachers.video import sample_indices

    assert sample_indices(5, 10, None, None) == [0, 1, 2, 3, 4]
    assert sample_indices(30, 10, 30, None) == list(range(0, 30, 3))  # 30 fps -> 10 fps
    assert sample_indices(50, 10, None, 5) == [0, 12, 24, 37, 49]


def test_bad_video_inputs(tmp_path):
    from primus_teachers.video import read_clip

    with pytest.raises(DataError, match="uint8"):
        read_clip([np.zeros((8, 8, 3), dtype=np.float32)])
    with pytest.raises(DataError, match="no image files"):
        read_clip(tmp_path)
    bad_device = "cuda:0" if not torch.cuda.is_available() else "nope"
    with pytest.raises(PrimusError, match="device"):
        primus_core.create("teacher", "clip-video", device=bad_device)


@pytest.fixture(scope="module")
def minilm():
    return primus_core.create("teacher", "minilm-text", device="cpu").load()


def test_minilm_offline_similarity(minilm):
    texts = [
        "a person is walking down the stairs",
        "someone walks downstairs",
        "the quarterly earnings report beat expectations",
        "a man is lying in bed",
    ]
    emb = minilm.embed(texts)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3
    assert sim[0, 1] > sim[0, 3]
    assert minilm.identity.startswith("minilm-text|sentence-transformers/all-MiniLM-L6-v2|")


def test_minilm_through_cache(minilm, tmp_path):
    cache = EmbeddingCache(tmp_path, progress=False)
    texts = ["sitting", "standing", "walking upstairs", "sitting"]
    first = cache.get_or_compute(minilm, texts, batch_size=2)
    assert (cache.hits, cache.misses) == (1, 3)
    again = EmbeddingCache(tmp_path, progress=False).get_or_compute(minilm, texts)
    torch.testing.assert_close(first, again)
    torch.testing.assert_close(first, minilm.embed(texts))


def test_cache_build_cli(cli, tmp_path):
    root = str(tmp_path / "cache")
    first = json.loads(cli("cache", "build", "primus-hapt", "--root", root, "--json").out)
    (row,) = first
    assert (row["teacher"], row["modality"]) == ("minilm-text", "text")
    assert row["with_input"] == row["windows"] > row["distinct"] == row["computed"] > 0
    assert (row["cached"], row["skipped"], row["frames_per_s"]) == (0, 0, None)
    assert row["inputs_per_s"] > 0
    (again,) = json.loads(cli("cache", "build", "primus-hapt", "--root", root, "--json").out)
    assert (again["computed"], again["cached"]) == (0, row["distinct"])
    info = json.loads(cli("cache", "info", "--root", root, "--json").out)
    (entry,) = info["teachers"]
    assert entry["entries"] == row["computed"] and entry["dim"] == 384
    assert entry["misses"] == row["computed"]
    assert entry["hits"] == 2 * row["with_input"] - row["computed"]
    text = cli("cache", "info", "--root", root).out
    assert "minilm-text" in text and "384" in text
    human = cli("cache", "build", "primus-hapt", "--root", root).out
    assert "with input" in human and "cached" in human
