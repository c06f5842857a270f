"""Zoo verification guards: every copy is re-hashed before use, and the shipped models match
registry.yaml. Oracles: hashlib on the files themselves, and hand-corrupted copies."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from primus_core.zoo import hub as zoo
from primus_core.zoo.hub import ZooEntry, ZooError

SHIPPED = "primus-hapt-stackrnn"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def registry_zoo() -> dict:
    return yaml.safe_load((REPO / "registry.yaml").read_text())["zoo"]


def shipped_entries() -> dict[str, dict]:
    return {n: e for n, e in registry_zoo().items() if "shipped" in e["source"]}


def test_the_five_shipped_models_match_their_registry_checksums():
    entries = shipped_entries()
    assert len(entries) == 5, sorted(entries)
    for name, entry in entries.items():
        folder = REPO / entry["source"]["shipped"]
        on_disk = {p.name for p in folder.iterdir() if p.is_file()}
        assert on_disk == set(entry["files"]), name
        for filename, digest in entry["files"].items():
            actual = hashlib.sha256((folder / filename).read_bytes()).hexdigest()
            assert actual == digest, f"{name}/{filename}"


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def fake_hub_snapshot(cache: Path, repo: str, files: dict[str, str]) -> Path:
    """A Hub cache laid out as huggingface_hub writes it (blobs + snapshot symlinks)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    shipped = REPO / "zoo" / SHIPPED
    for filename in files:
        blob = root / "blobs" / hashlib.sha256((shipped / filename).read_bytes()).hexdigest()
        shutil.copyfile(shipped / filename, blob)
        (snapshot / filename).symlink_to(blob)
    return snapshot


@pytest.fixture
def hub_entry(tmp_path, monkeypatch):
    """A Hub-sourced zoo entry whose pinned snapshot is already in a private Hub cache."""
    files = registry_zoo()[SHIPPED]["files"]
    entry = {
        "description": "cached hub copy",
        "source": {"hub": "org/cached-model", "revision": COMMIT},
        "files": files,
        "licence": "cc-by-4.0",
    }
    ZooEntry.model_validate(entry)
    registry_layer(tmp_path / "layer", monkeypatch, {"cached": entry})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return fake_hub_snapshot(tmp_path / "hub", "org/cached-model", files)


def registry_layer(folder: Path, monkeypatch, entries: dict) -> Path:
    """A user's registry file with these zoo entries, layered on the built-in one through
    PRIMUS_REGISTRY (relative shipped: paths resolve against its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.yaml"
    path.write_text(yaml.safe_dump({"zoo": entries}))
    monkeypatch.setenv("PRIMUS_REGISTRY", str(path))
    return path


def test_a_cached_hub_snapshot_is_rehashed_before_use(hub_entry):
    assert zoo.pull("cached", offline=True) == hub_entry  # the intact snapshot is used
    flip_last_byte((hub_entry / "config.json").resolve())
    with pytest.raises(ZooError, match="checksum mismatch"):
        zoo.pull("cached", offline=True)
    # the bad blob is gone, so nothing can load it afterwards
    assert not (hub_entry / "config.json").exists()
    assert not (hub_entry / "config.json").is_symlink()  # no dangling link left either


def test_verify_rehashes_a_cached_hub_snapshot(hub_entry):
    assert len(zoo.verify("cached").files) == 3
    flip_last_byte((hub_entry / "model.safetensors").resolve())
    with pytest.raises(ZooError, match="checksum mismatch"):
        zoo.verify("cached")


def test_an_installed_copy_is_rehashed_before_use(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIMUS_HOME", str(tmp_path / "home"))
    target = zoo.pull(SHIPPED)
    assert target == tmp_path / "home" / "zoo" / "models" / SHIPPED
    flip_last_byte(target / "model.safetensors")
    with pytest.raises(ZooError, match="checksum mismatch"):
        zoo.pull(SHIPPED)
    with pytest.raises(ZooError):  # the bad file was deleted: verify reports it missing
        zoo.verify(SHIPPED)
    # the next pull reinstalls a good copy from the shipped directory
    again = zoo.pull(SHIPPED)
    shipped = REPO / "zoo" / SHIPPED
    assert (again / "model.safetensors").read_bytes() == (
        shipped / "model.safetensors"
    ).read_bytes()


def test_a_corrupt_shipped_source_is_never_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIMUS_HOME", str(tmp_path / "home"))
    fake_registry = tmp_path / "registry"
    shutil.copytree(REPO / "zoo" / SHIPPED, fake_registry / "zoo" / SHIPPED)
    flip_last_byte(fake_registry / "zoo" / SHIPPED / "config.json")
    registry_layer(fake_registry, monkeypatch, {SHIPPED: registry_zoo()[SHIPPED]})
    with pytest.raises(ZooError, match="checksum mismatch"):
        zoo.pull(SHIPPED)
    assert not (tmp_path / "home" / "zoo" / "models" / SHIPPED).exists()
    assert list((tmp_path / "home" / "zoo" / "models").iterdir()) == []  # no staging left


def test_staging_and_aside_folders_are_named_for_the_dead_writer_cleanup(tmp_path, monkeypatch):
    """A pull killed mid-install leaves `.NAME.tmp-PID-*` folders that the next pull removes
    (clean_stale_staging); the folders an install creates must carry that name."""
    import os

    target = tmp_path / "home" / "zoo" / "model"  # neither folder exists yet
    staging = zoo._staging_dir(target)
    assert staging.parent == target.parent
    assert staging.name.startswith(f".model.tmp-{os.getpid()}-")
    (staging / "weights").write_text("new")
    old = zoo._staging_dir(target)
    (old / "weights").write_text("old")
    zoo._install(old, target)  # an earlier install in place
    moves = []
    real_replace = os.replace

    def spy(src, dst):
        moves.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    zoo._install(staging, target)
    aside = moves[0][1]
    assert moves[0][0] == target and aside.name == "old"
    assert aside.parent.name.startswith(f".model.tmp-{os.getpid()}-")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # nothing left aside
