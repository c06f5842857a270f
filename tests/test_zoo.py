"""The zoo: pull from a real Hub (olah on loopback, a git repo made here, pinned commit), push to a
small Hub API on loopback and pull it back, offline use, shipped copies, checksums, the resumable
reference-checkpoint download, and the errors a user can cause."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml
from hubapi import hub_api  # noqa: F401  (fixture)
from hubserver import free_port, local_hub  # noqa: F401  (fixture)
from test_modeldir import reference_checkpoint

import primus_core
from primus_core.cli.main import zoo as zoo_group
from primus_core.cli.zoo import add_zoo_commands
from primus_core.errors import ModelDirError
from primus_core.zoo.modeldir import load_model_dir, save_model_dir

add_zoo_commands(zoo_group)  # idempotent; cli.py wires it too

SMALL = {"conv_channels": 8, "hidden_size": 32, "ssl_dim": 16, "mmcl_dim": 16}
TOKEN = "hf_test_secret_token_123"


# ---------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def zoo_env(tmp_path, monkeypatch, _primus_env):
    """A private PRIMUS_HOME and Hub cache; a Hub endpoint where nothing listens."""
    monkeypatch.setenv("PRIMUS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def make_model_dir(path: Path, seed: int = 0):
    torch.manual_seed(seed)
    encoder = primus_core.create("encoder", "stacked-rnn", **SMALL).eval()
    save_model_dir(encoder, path, encoder_type="stacked-rnn", encoder_params=SMALL)
    return path, encoder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder: Path, names=("model.safetensors", "config.json", "README.md")) -> dict:
    return {n: sha256(folder / n) for n in names}


def zoo_row(cli, name: str = "tiny") -> dict:
    """The ``zoo list --json`` row of ``name`` (the built-in entries are listed too)."""
    return {r["name"]: r for r in json.loads(cli("zoo", "list", "--json").out)}[name]


def write_registry(tmp_path: Path, monkeypatch, zoo: dict) -> Path:
    registry = tmp_path / "repo" / "registry.yaml"
    registry.parent.mkdir(exist_ok=True)
    registry.write_text(yaml.safe_dump({"recipes": {}, "zoo": zoo}, sort_keys=False))
    monkeypatch.setenv("PRIMUS_REGISTRY", str(registry))
    return registry


def hub_entry(repo_id: str, sha: str, files: dict, **extra) -> dict:
    return {
        "description": "a small test encoder",
        "source": {"hub": repo_id, "revision": sha, **extra},
        "files": files,
        "training_data": ["hapt"],
        "metrics": {"hapt/5-shot/accuracy": 0.5},
        "licence": "cc-by-4.0",
    }


def same_outputs(a, b) -> None:
    x = torch.randn(3, 6, 250)
    with torch.no_grad():
        out_a, out_b = a(x), b(x)
    for head in ("emb", "ssl", "mmcl"):
        torch.testing.assert_close(out_a[head], out_b[head])


def one_line_error(result, *fragments: str) -> None:
    line = result.err.strip().splitlines()[-1]
    assert line.startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in line, line


# ---------------------------------------------------------------- olah: pull, verify, load
@pytest.fixture
def olah_model(local_hub, tmp_path, monkeypatch):  # noqa: F811
    """A model directory committed to a git repo that olah serves; HF_ENDPOINT points at it."""
    folder, encoder = make_model_dir(tmp_path / "src")
    repo_id = f"primus-test/tiny-{tmp_path.name[-12:].strip('_-')}"
    sha = local_hub.add_repo(repo_id, folder)
    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
    return repo_id, sha, folder, encoder


def report(capsys, message: str) -> None:
    """Timings shown with ``pytest -s`` (outside the CLI's captured output)."""
    with capsys.disabled():
        print(f"\n{message}")


def test_pull_from_olah_pinned_verify_and_load(olah_model, tmp_path, monkeypatch, cli, capsys):
    repo_id, sha, folder, encoder = olah_model
    write_registry(tmp_path, monkeypatch, {"tiny": hub_entry(repo_id, sha, digests(folder))})
    assert zoo_row(cli)["cached"] is False

    start = time.perf_counter()
    pulled = cli("zoo", "pull", "tiny")
    pull_s = time.perf_counter() - start
    path = Path(pulled.out.strip())
    assert path.name == sha and path.parent.name == "snapshots"
    assert path.is_relative_to(tmp_path / "hf")
    assert digests(path) == digests(folder)

    start = time.perf_counter()
    verified = cli("zoo", "verify", "tiny")
    verify_s = time.perf_counter() - start
    assert verified.out.count("ok  ") == 3 and "3 files" in verified.err
    size = sum(f.stat().st_size for f in folder.iterdir())
    report(capsys, f"pull from olah ({size} B): {pull_s:.2f} s, verify: {verify_s:.3f} s")

    row = zoo_row(cli)
    assert row["cached"] is True and row["parameters"] > 0
    assert row["headline_metric"] == "hapt/5-shot/accuracy"
    assert "tiny" in cli("zoo", "list").out and "hapt" in cli("zoo", "info", "tiny").out

    same_outputs(primus_core.load_pretrained("tiny"), encoder)
    # the pinned commit is cached: a second pull needs no network at all
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert cli("zoo", "pull", "tiny").out.strip() == str(path)
    assert cli("zoo", "pull", "tiny", "--offline").out.strip() == str(path)


def test_corrupted_blob_is_detected_deleted_and_pulled_again(
    olah_model, tmp_path, monkeypatch, cli
):
    repo_id, sha, folder, _ = olah_model
    write_registry(tmp_path, monkeypatch, {"tiny": hub_entry(repo_id, sha, digests(folder))})
    path = Path(cli("zoo", "pull", "tiny").out.strip())
    blob = (path / "model.safetensors").resolve()
    assert blob.parent.name == "blobs"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))

    bad = cli("zoo", "verify", "tiny", expect=1)
    one_line_error(bad, "model.safetensors", "checksum mismatch", "deleted")
    assert not blob.exists() and not (path / "model.safetensors").exists()
    with pytest.raises(ModelDirError):  # what is left does not load
        load_model_dir(path)
    assert zoo_row(cli)["cached"] is False

    assert cli("zoo", "pull", "tiny").out.strip() == str(path)
    assert cli("zoo", "verify", "tiny").out.count("ok  ") == 3


def test_registry_checksum_mismatch_fails_and_leaves_nothing_that_loads(
    olah_model, tmp_path, monkeypatch, cli
):
    repo_id, sha, folder, _ = olah_model
    files = digests(folder)
    files["config.json"] = "0" * 64
    write_registry(tmp_path, monkeypatch, {"tiny": hub_entry(repo_id, sha, files)})
    bad = cli("zoo", "pull", "tiny", expect=1)
    one_line_error(bad, "config.json", "checksum mismatch")
    snapshot = tmp_path / "hf" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha
    assert not (snapshot / "config.json").exists()
    with pytest.raises(ModelDirError, match="config.json"):
        load_model_dir(snapshot)
    with pytest.raises(primus_core.PrimusError, match="checksum mismatch"):
        primus_core.load_pretrained("tiny")


def test_bad_revisions_repos_and_names(olah_model, tmp_path, monkeypatch, cli):
    repo_id, sha, folder, _ = olah_model
    files = digests(folder)
    write_registry(
        tmp_path,
        monkeypatch,
        {
            "tiny": hub_entry(repo_id, sha, files),
            "wrong-commit": hub_entry(repo_id, "0" * 40, files),
            "no-repo": hub_entry("primus-test/does-not-exist", sha, files),
        },
    )
    one_line_error(cli("zoo", "pull", "wrong-commit", expect=1), repo_id, "0" * 40)
    one_line_error(cli("zoo", "pull", "no-repo", expect=1), "primus-test/does-not-exist")
    one_line_error(cli("zoo", "pull", "tiny", "--revision", "f" * 40, expect=1), repo_id, "f" * 40)
    unknown = cli("zoo", "pull", "tinny", expect=1)
    one_line_error(
        unknown,
        "unknown zoo model 'tinny'",
        "no-repo, ",
        "tiny, wrong-commit",  # the test layer's entries, next to the built-in ones
        "did you mean 'tiny'",
    )
    one_line_error(cli("zoo", "info", "nope", expect=1), "no-repo, ", "tiny, wrong-commit")
    with pytest.raises(primus_core.PrimusError, match="unknown zoo model"):
        primus_core.load_pretrained("nope")

    # registry entries are validated, with the dotted path of the bad field; a bad entry is
    # skipped by the listing and an error when used
    write_registry(tmp_path, monkeypatch, {"bad": hub_entry("not a repo id!", "main", files)})
    assert "bad" not in {r["name"] for r in json.loads(cli("zoo", "list", "--json").out)}
    one_line_error(cli("zoo", "info", "bad", expect=1), "zoo.bad.source", "invalid Hub repo id")
    write_registry(tmp_path, monkeypatch, {"bad": hub_entry(repo_id, "main", files)})
    one_line_error(cli("zoo", "pull", "bad", expect=1), "zoo.bad.source", "40-hex commit")


# ---------------------------------------------------------------- shipped copies and offline use
def test_shipped_copy_used_when_hub_unreachable_and_offline(tmp_path, monkeypatch, cli):
    registry = write_registry(tmp_path, monkeypatch, {})
    folder, encoder = make_model_dir(registry.parent / "zoo" / "tiny")
    files = digests(folder)
    write_registry(
        tmp_path,
        monkeypatch,
        {
            "tiny": hub_entry("primus-test/tiny", "a" * 40, files, shipped="zoo/tiny"),
            "hub-only": hub_entry("primus-test/tiny", "a" * 40, files),
            "shipped-only": {
                **hub_entry("x/y", "a" * 40, files),
                "source": {"shipped": "zoo/tiny"},
            },
            "gone": {**hub_entry("x/y", "a" * 40, files), "source": {"shipped": "zoo/missing"}},
        },
    )
    pulled = cli("zoo", "pull", "tiny")  # HF_ENDPOINT: nothing listens there
    assert "cannot be reached" in pulled.err and "shipped copy zoo/tiny" in pulled.err
    path = Path(pulled.out.strip())
    assert path == tmp_path / "home" / "zoo" / "models" / "tiny"
    same_outputs(primus_core.load_pretrained("tiny"), encoder)
    assert cli("zoo", "verify", "tiny").out.count("ok  ") == 3

    # offline: the zoo cache, without a word about the network for a shipped-only entry
    assert Path(cli("zoo", "pull", "tiny", "--offline").out.strip()) == path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    same_outputs(primus_core.load_pretrained("shipped-only"), encoder)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    one_line_error(
        cli("zoo", "pull", "hub-only", "--offline", expect=1),
        "hub-only",
        "offline",
        "no cached or shipped copy",
    )
    one_line_error(
        cli("zoo", "pull", "hub-only", expect=1), "cannot be reached", "no cached or shipped copy"
    )
    one_line_error(cli("zoo", "pull", "gone", expect=1), "shipped copy", "missing")
    one_line_error(cli("zoo", "verify", "hub-only", expect=1), "not cached")

    # a shipped file that does not match registry.yaml is never installed
    (folder / "README.md").write_text("tampered\n")
    shutil.rmtree(path.parent)
    one_line_error(cli("zoo", "pull", "shipped-only", expect=1), "README.md", "checksum mismatch")
    assert not (path.parent / "shipped-only").exists()
    assert folder.joinpath("README.md").read_text() == "tampered\n"  # the repo's copy is kept


# ---------------------------------------------------------------- hostile names (issue 13, item 1)
@pytest.mark.parametrize("bad", ["../../../victim", "/abs/victim", ".", "..", "a/../b", "x\n"])
def test_unsafe_zoo_name_never_becomes_a_path(bad, tmp_path, monkeypatch, cli):
    """A registry entry named like a path is refused when the registry is read: nothing outside
    the zoo cache is deleted or written, and models already cached are kept."""
    registry = write_registry(tmp_path, monkeypatch, {})
    folder, _ = make_model_dir(registry.parent / "zoo" / "tiny")
    entry = {**hub_entry("x/y", "a" * 40, digests(folder)), "source": {"shipped": "zoo/tiny"}}
    write_registry(tmp_path, monkeypatch, {"tiny": entry})
    cached = Path(cli("zoo", "pull", "tiny").out.strip())
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me\n")
    monkeypatch.chdir(tmp_path / "home")  # so that a relative escape would land on the victim
    write_registry(tmp_path, monkeypatch, {"tiny": entry, bad: entry})
    for command in (["zoo", "pull", bad], ["zoo", "info", bad]):
        one_line_error(cli(*command, expect=1), "not a safe name")
    listed = {r["name"] for r in json.loads(cli("zoo", "list", "--json").out)}
    assert bad not in listed and "tiny" in listed  # the bad entry is skipped, the others listed
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert (cached / "model.safetensors").is_file()
    assert sorted(p.name for p in cached.parent.iterdir()) == ["tiny"]


def test_zoo_paths_stay_under_primus_home(tmp_path, monkeypatch):
    """Every path made from a name is checked: a symlink planted in the cache is refused too."""
    from primus_core.zoo.hub import ZooError, download_dir, local_model_dir

    home = tmp_path / "home"
    assert local_model_dir("tiny") == home / "zoo" / "models" / "tiny"
    assert download_dir("tiny") == home / "zoo" / "downloads" / "tiny"
    for bad in ("../x", "/etc", ".", "", "a" * 101):
        with pytest.raises(ZooError, match="not a safe name"):
            local_model_dir(bad)
    (home / "zoo" / "models").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (home / "zoo" / "models" / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ZooError, match="outside"):
        local_model_dir("linked")


# ---------------------------------------------------------------- push, then pull it back
def test_push_to_hub_api_then_pull_with_a_fresh_cache(
    hub_api,  # noqa: F811
    tmp_path,
    monkeypatch,
    cli,
):
    folder, encoder = make_model_dir(tmp_path / "model")
    monkeypatch.setenv("HF_ENDPOINT", hub_api.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    pushed = cli("zoo", "push", folder, "--repo-id", "primus-test/tiny", "--name", "tiny")
    commit = pushed.out.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert f"revision: {commit}" in pushed.err and TOKEN not in pushed.out + pushed.err
    assert hub_api.files("primus-test/tiny") == {
        n: (folder / n).read_bytes() for n in ("model.safetensors", "config.json", "README.md")
    }
    assert all(h == f"Bearer {TOKEN}" for h in hub_api.state.auth_headers)

    # an existing model card is kept unless asked
    (folder / "README.md").write_text((folder / "README.md").read_text() + "\nedited\n")
    again = cli("zoo", "push", folder, "--repo-id", "primus-test/tiny")
    assert "kept the model card" in again.err
    assert b"edited" not in hub_api.files("primus-test/tiny")["README.md"]
    third = cli("zoo", "push", folder, "--repo-id", "primus-test/tiny", "--overwrite-card")
    assert b"edited" in hub_api.files("primus-test/tiny")["README.md"]
    commit = third.out.strip()

    # a branch, and a private repo
    branch = cli("zoo", "push", folder, "--repo-id", "primus-test/tiny", "--revision", "v1")
    assert hub_api.state.repos["primus-test/tiny"].branches["v1"] == branch.out.strip()
    cli("zoo", "push", folder, "--repo-id", "primus-test/private", "--private")
    assert hub_api.state.repos["primus-test/private"].private

    # pull what was pushed, pinned, into a fresh cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    write_registry(
        tmp_path, monkeypatch, {"tiny": hub_entry("primus-test/tiny", commit, digests(folder))}
    )
    path = Path(cli("zoo", "pull", "tiny").out.strip())
    assert path.is_relative_to(tmp_path / "fresh-cache") and path.name == commit
    same_outputs(primus_core.load_pretrained("tiny"), encoder)
    other = cli("zoo", "pull", "tiny", "--revision", "v1")
    assert "not checked against registry.yaml" in other.err


def test_push_errors_are_one_line_and_never_show_the_token(
    hub_api,  # noqa: F811
    tmp_path,
    monkeypatch,
    cli,
):
    folder, _ = make_model_dir(tmp_path / "model")
    monkeypatch.setenv("HF_ENDPOINT", hub_api.endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_456")
    denied = cli("zoo", "push", folder, "--repo-id", "primus-test/tiny", expect=1)
    one_line_error(denied, "not authorised", "HF_TOKEN")
    assert "hf_wrong_token_456" not in denied.out + denied.err
    assert hub_api.state.repos == {}

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for bad in ("no-slash", "a/b/c", "org/bad name", "org/..", "-org/name"):
        one_line_error(
            cli("zoo", "push", folder, "--repo-id", bad, expect=1), "invalid Hub repo id"
        )
    broken = tmp_path / "broken"
    broken.mkdir()
    one_line_error(
        cli("zoo", "push", broken, "--repo-id", "primus-test/x", expect=1), "config.json"
    )
    assert hub_api.state.repos == {}


# ---------------------------------------------------------------- the reference checkpoint
class FlakyFileServer:
    """Serves one file with Range support; the first full GET drops the connection half way."""

    def __init__(self, data: bytes):
        self.data, self.drops_left, self.ranges = data, 1, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                body = server.data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(server.data) - 1}/{len(server.data)}"
                    )
                self.end_headers()
                if server.drops_left and not rng:
                    server.drops_left -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = (
            f"http://127.0.0.1:{self.httpd.server_address[1]}/records/1/files/best_model.ckpt"
        )

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def reference_entry(url: str, data: bytes, md5: str | None = None) -> dict:
    return {
        "description": "PRIMUS reference weights (test copy)",
        "source": {"url": url, "size": len(data), "md5": md5 or hashlib.md5(data).hexdigest()},
        "training_data": ["egoexo4d"],
        "licence": "cc-by-4.0",
    }


def test_reference_download_resumes_checks_md5_and_converts(tmp_path, monkeypatch, cli, capsys):
    torch.manual_seed(0)
    original = primus_core.create("encoder", "stacked-rnn", **SMALL).eval()
    ckpt = reference_checkpoint(tmp_path / "best_model.ckpt", original)
    data = ckpt.read_bytes()
    with FlakyFileServer(data) as server:
        write_registry(
            tmp_path,
            monkeypatch,
            {
                "primus-egoexo4d-reference": reference_entry(server.url, data),
                "bad-md5": reference_entry(server.url, data, md5="0" * 32),
            },
        )
        start = time.perf_counter()
        pulled = cli("zoo", "pull", "primus-egoexo4d-reference")
        seconds = time.perf_counter() - start
        assert server.ranges[0] is None and server.ranges[1] == f"bytes={len(data) // 2}-"
        assert "interrupted" in pulled.err and "resuming" in pulled.err
        path = Path(pulled.out.strip())
        assert path == tmp_path / "home" / "zoo" / "models" / "primus-egoexo4d-reference"
        assert not any((tmp_path / "home" / "zoo" / "downloads").rglob("*.ckpt*"))
        same_outputs(primus_core.load_pretrained("primus-egoexo4d-reference"), original)
        verified = cli("zoo", "verify", "primus-egoexo4d-reference")
        report(
            capsys,
            f"reference pull ({len(data)} B, resumed once): {seconds:.2f} s; "
            f"{verified.err.strip()}",
        )
        one_line_error(
            cli("zoo", "pull", "primus-egoexo4d-reference", "--revision", "x", expect=1),
            "only to Hub sources",
        )

        bad = cli("zoo", "pull", "bad-md5", expect=1)
        one_line_error(bad, "MD5 mismatch", "deleted the download")
        assert not (tmp_path / "home" / "zoo" / "models" / "bad-md5").exists()
        assert not any((tmp_path / "home" / "zoo" / "downloads" / "bad-md5").iterdir())

        monkeypatch.setenv("PRIMUS_HOME", str(tmp_path / "home2"))
        one_line_error(
            cli("zoo", "pull", "primus-egoexo4d-reference", "--offline", expect=1),
            "not cached",
            "offline",
        )
        kept = cli("zoo", "pull", "primus-egoexo4d-reference", "--keep-original")
        assert (
            tmp_path / "home2/zoo/downloads/primus-egoexo4d-reference/best_model.ckpt"
        ).read_bytes() == data
        assert "kept the original" in kept.err

    # a converted file damaged on disk is caught by verify and reinstalled by pull (no network:
    # the kept original is converted again)
    converted = Path(kept.out.strip()) / "model.safetensors"
    converted.write_bytes(b"not safetensors")
    one_line_error(cli("zoo", "verify", "primus-egoexo4d-reference", expect=1), "checksum mismatch")
    assert Path(cli("zoo", "pull", "primus-egoexo4d-reference").out.strip()).is_dir()
    same_outputs(primus_core.load_pretrained("primus-egoexo4d-reference"), original)


# ---------------------------------------------------------------- concurrent pulls (issue 13, item 3)
def _race_worker(kind, barrier, results, x_path):
    import numpy as np

    from primus_core.data.embed import embed_windows
    from primus_core.zoo.hub import pull

    torch.set_num_threads(1)
    try:
        barrier.wait(30)
        if kind == "pull":
            result = sorted(p.name for p in pull("tiny").iterdir())
        else:
            vectors = embed_windows(primus_core.load_pretrained("tiny"), np.load(x_path))
            result = hashlib.sha256(vectors.tobytes()).hexdigest()
        results.put((kind, "ok", result))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put((kind, "failed", f"{type(exc).__name__}: {exc}"))


def test_concurrent_pulls_and_embeds_of_one_name(tmp_path, monkeypatch):
    """Several processes pull and embed one model at once, over rounds that start from nothing,
    from an incomplete install and from a dead process's staging folder: none fails, every embed
    sees a complete model, nothing is left behind."""
    import multiprocessing
    import subprocess
    import sys

    import numpy as np

    registry = write_registry(tmp_path, monkeypatch, {})
    folder, encoder = make_model_dir(registry.parent / "zoo" / "tiny")
    entry = {**hub_entry("x/y", "a" * 40, digests(folder)), "source": {"shipped": "zoo/tiny"}}
    write_registry(tmp_path, monkeypatch, {"tiny": entry})
    x = np.random.default_rng(0).normal(size=(2, 6, 250)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        expected = hashlib.sha256(encoder(torch.from_numpy(x))["mmcl"].numpy().tobytes())
    models = tmp_path / "home" / "zoo" / "models"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    ctx = multiprocessing.get_context("fork")
    start = time.perf_counter()
    for round_no in range(4):
        if round_no == 1:
            (models / "tiny" / "config.json").unlink()  # an incomplete install
        if round_no == 2:
            shutil.rmtree(models / "tiny")
            (models / f".tiny.tmp-{dead}-x1y2").mkdir()  # a dead process's staging folder
            (models / f".tiny.tmp-{dead}-x1y2" / "model.safetensors").write_bytes(b"half")
        kinds = ["pull"] * 3 + ["embed"] * 3
        barrier, results = ctx.Barrier(len(kinds)), ctx.Queue()
        procs = [
            ctx.Process(target=_race_worker, args=(k, barrier, results, tmp_path / "x.npy"))
            for k in kinds
        ]
        for proc in procs:
            proc.start()
        got = [results.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join(30)
        failures = [g for g in got if g[1] != "ok"]
        assert not failures, (round_no, failures)
        assert all(g[2] == sorted(digests(folder)) for g in got if g[0] == "pull")
        assert {g[2] for g in got if g[0] == "embed"} == {expected.hexdigest()}
        assert sorted(p.name for p in models.iterdir()) == ["tiny"], round_no
    assert time.perf_counter() - start < 120


def test_installed_model_folders_have_plain_modes(tmp_path, monkeypatch, cli):
    """Item 9: installed model folders were 0700 (mkdtemp), weights 0600 (safetensors)."""
    import os
    import stat

    registry = write_registry(tmp_path, monkeypatch, {})
    folder, _ = make_model_dir(registry.parent / "zoo" / "tiny")
    entry = {**hub_entry("x/y", "a" * 40, digests(folder)), "source": {"shipped": "zoo/tiny"}}
    write_registry(tmp_path, monkeypatch, {"tiny": entry})
    path = Path(cli("zoo", "pull", "tiny").out.strip())
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o666 & ~mask


# ---------------------------------------------------------------- Hub ids
def test_pull_load_and_embed_by_hub_id(olah_model, tmp_path, monkeypatch, cli):
    """``hf-hub:ORG/NAME[@REV]`` works wherever a model is named: zoo pull, load_pretrained,
    embed, eval; an unpinned revision is resolved to a commit and reported; files are hash-checked
    when a zoo entry pins that commit."""
    import numpy as np

    repo_id, sha, folder, encoder = olah_model
    write_registry(tmp_path, monkeypatch, {})
    pulled = cli("zoo", "pull", f"hf-hub:{repo_id}")
    path = Path(pulled.out.strip())
    assert path.name == sha and f"resolved to commit {sha}" in pulled.err
    assert "not hash-checked" in pulled.err
    assert digests(path) == digests(folder)
    same_outputs(primus_core.load_pretrained(f"hf-hub:{repo_id}@{sha}"), encoder)

    windows = np.random.default_rng(0).normal(size=(2, 6, 250)).astype(np.float32)
    np.save(tmp_path / "w.npy", windows)
    out = tmp_path / "e.npy"
    cli("embed", f"hf-hub:{repo_id}@{sha}", tmp_path / "w.npy", "--head", "emb", "--out", out)
    expected = primus_core.embed(encoder, windows, head="emb")
    assert np.allclose(np.load(out), expected, atol=1e-5)

    # a zoo entry pinning the commit: the same files are checked against its digests
    bad = {**digests(folder), "config.json": "0" * 64}
    write_registry(tmp_path, monkeypatch, {"tiny": hub_entry(repo_id, sha, bad)})
    shutil.rmtree(tmp_path / "hf", ignore_errors=True)
    one_line_error(cli("zoo", "pull", f"hf-hub:{repo_id}", expect=1), "checksum mismatch")
    one_line_error(cli("zoo", "pull", "hf-hub:not a repo", expect=1), "invalid Hub repo id")
