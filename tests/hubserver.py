"""A local Hugging Face Hub on loopback for tests: olah serving git repositories from disk.

Usage from a test module::

    from hubserver import local_hub  # noqa: F401  (the session-scoped pytest fixture)

    def test_pull(local_hub):
        sha = local_hub.add_repo("org/name", folder)   # commits ``folder``; returns the sha
        env = local_hub.env()                           # HF_ENDPOINT/HF_HOME for a subprocess

or without pytest: ``with LocalHub(tmp_dir) as hub: ...``.

olah runs with ``[accessibility] offline = true`` and ``mirrors-path``: it answers only from the
git repositories under ``<root>/mirrors/<models|datasets>/<org>/<name>``. Always ask for a commit
sha as the revision: under a branch name olah answers 401 for files it cannot find.
huggingface_hub reads HF_ENDPOINT when it is imported, so a client must be a fresh process started
with ``env()`` (or pass ``endpoint=hub.endpoint`` to ``HfApi``/``hf_hub_download``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "primus tests",
    "GIT_AUTHOR_EMAIL": "tests@primus.invalid",
    "GIT_COMMITTER_NAME": "primus tests",
    "GIT_COMMITTER_EMAIL": "tests@primus.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


class LocalHub:
    """olah on 127.0.0.1 serving git repos under ``root/mirrors`` (a context manager)."""

    def __init__(self, root: Path | str, port: int | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.mirrors = self.root / "mirrors"
        self.hf_home = self.root / "hf_home"
        self._proc: subprocess.Popen | None = None
        self._log = None

    # ---- repositories
    def add_repo(
        self, repo_id: str, folder: Path | str, repo_type: str = "model", message: str = "upload"
    ) -> str:
        """Commit the files of ``folder`` to the repo ``repo_id`` (created if new); the sha."""
        repo = self.mirrors / f"{repo_type}s" / repo_id
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
        for item in Path(folder).iterdir():
            target = repo / item.name
            if item.is_dir():
                shutil.copytree(item, target, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        return _git(repo, "rev-parse", "HEAD")

    # ---- server
    def _write_config(self) -> Path:
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{self.root / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "[accessibility]\noffline = true\n",
            encoding="utf-8",
        )
        return config

    def start(self, timeout: float = 60.0) -> LocalHub:
        self.mirrors.mkdir(parents=True, exist_ok=True)
        (self.mirrors / "models").mkdir(exist_ok=True)
        self.hf_home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._log = open(self.root / "olah.out", "wb")  # noqa: SIM115 (closed in stop())
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "olah.server",
                "-c",
                str(config),
                "--log-path",
                str(self.root / "logs"),
            ],
            cwd=self.root,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"olah exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.endpoint + "/api/models/none/none", timeout=2):
                    pass
                return self
            except urllib.error.HTTPError:
                return self  # the server answers (404/401 for an unknown repo)
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not start within {timeout:g} s: {self.log_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 2000) -> str:
        path = self.root / "olah.out"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client process: this hub as HF_ENDPOINT, a private HF_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(self.hf_home),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        env.update(extra)
        return env

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory):
    """A running :class:`LocalHub` shared by the session; add repos with ``add_repo``."""
    with LocalHub(tmp_path_factory.mktemp("hub")) as hub:
        yield hub
