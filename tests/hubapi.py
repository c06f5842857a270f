"""A small Hugging Face Hub API on loopback for push tests (stdlib http.server, in a thread).

It implements what huggingface_hub's ``create_repo``, ``create_branch``, ``file_exists``,
``create_commit`` (regular, base64 uploads only: preupload answers "regular" for every file),
``model_info``/``repo_info`` and ``hf_hub_download`` call, so that a push can be pulled back:

    POST /api/repos/create                       {"name", "organization", "visibility"?}
    POST /api/validate-yaml                      model-card front matter check
    GET  /api/models/ORG/NAME[/revision/REV]     repo info (sha, siblings)
    POST /api/models/ORG/NAME/branch/BRANCH      new branch from main
    POST /api/models/ORG/NAME/preupload/REV      upload modes
    POST /api/models/ORG/NAME/commit/REV         NDJSON commit (header + base64 files)
    HEAD|GET /ORG/NAME/resolve/REV/PATH          file content (X-Repo-Commit, ETag, Range)

With ``token`` set, every request must carry ``Authorization: Bearer <token>`` (401 otherwise);
private repos are hidden (404) from requests without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest

REPO = r"(?P<repo>[^/]+/[^/]+)"


@dataclass
class Repo:
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> files

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubState:
    def __init__(self, token: str | None):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []  # "METHOD path" of every request (for assertions)
        self.auth_headers: list[str] = []  # Authorization headers seen (tests check redaction)
        self.lock = threading.Lock()


def _commit_sha(parent: str | None, files: dict[str, bytes], message: str) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update((parent or "").encode() + message.encode())
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


class Handler(BaseHTTPRequestHandler):
    server_version = "primus-hubapi/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> HubState:
        return self.server.state  # type: ignore[attr-defined]

    def log_message(self, *args) -> None:  # quiet
        pass

    # ---- helpers
    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict[str, str] | None = None, head=False) -> None:
        self._send(status, json.dumps(data).encode(), headers, head=head)

    def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization")
        if header:
            self.state.auth_headers.append(header)
        return self.state.token is None or header == f"Bearer {self.state.token}"

    def _repo(self, repo_id: str, head: bool = False) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorised()):
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head=head)
            return None
        return repo

    # ---- dispatch
    def _dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        with self.state.lock:
            self.state.requests.append(f"{method} {path}")
            if method in ("POST", "PUT", "DELETE") and not self._authorised():
                self._body()
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            routes = [
                ("POST", r"/api/repos/create", self.create_repo),
                ("POST", r"/api/validate-yaml", self.validate_yaml),
                ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>.+))?", self.repo_info),
                ("POST", rf"/api/models/{REPO}/branch/(?P<rev>.+)", self.create_branch),
                ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>.+)", self.preupload),
                ("POST", rf"/api/models/{REPO}/commit/(?P<rev>.+)", self.commit),
                ("GET", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
                ("HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
            ]
            for verb, pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    handler(**{k: v for k, v in match.groupdict().items() if v is not None})
                    return
            self._body()
            self._error(404, None, f"no route {method} {path}", head=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ---- endpoints
    def create_repo(self) -> None:
        payload = json.loads(self._body() or b"{}")
        repo_id = f"{payload.get('organization')}/{payload.get('name')}"
        url = f"http://{self.headers['Host']}/{repo_id}"
        if repo_id in self.state.repos:  # the Hub answers 409 with the url
            message = "You already created this model repo"
            self._json(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.state.repos[repo_id] = Repo(private=private)
        self._json(200, {"url": url, "name": repo_id})

    def validate_yaml(self) -> None:
        content = json.loads(self._body() or b"{}").get("content", "")
        if content.startswith("---") and content.count("---") < 2:
            self._json(400, {"errors": [{"message": "unterminated front matter"}]})
            return
        self._json(200, {"errors": [], "warnings": []})

    def repo_info(self, repo: str, rev: str = "main") -> None:
        found = self._repo(repo)
        if found is None:
            return
        sha = found.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        files = found.commits.get(sha, {})
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": sha,
                "private": found.private,
                "siblings": [{"rfilename": f} for f in sorted(files)],
                "tags": [],
            },
        )

    def create_branch(self, repo: str, rev: str) -> None:
        self._body()
        found = self._repo(repo)
        if found is None:
            return
        if rev in found.branches:
            self._error(409, None, f"Reference already exists: {rev}")
            return
        if "main" not in found.branches:  # an empty repo: the branch starts empty
            empty = _commit_sha(None, {}, "initial commit")
            found.commits[empty] = {}
            found.branches["main"] = empty
        found.branches[rev] = found.branches["main"]
        self._json(200, {})

    def preupload(self, repo: str, rev: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if self._repo(repo) is None:
            return
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
            for f in payload.get("files", [])
        ]
        self._json(200, {"files": files})

    def commit(self, repo: str, rev: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        found = self._repo(repo)
        if found is None:
            return
        if rev not in found.branches and found.branches:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        parent = found.branches.get(rev)
        files = dict(found.commits.get(parent, {})) if parent else {}
        header = {}
        for item in lines:
            value = item.get("value", {})
            if item.get("key") == "header":
                header = value
            elif item.get("key") == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item.get("key") == "deletedFile":
                files.pop(value["path"], None)
            else:
                self._error(400, None, f"unsupported commit operation {item.get('key')}")
                return
        sha = _commit_sha(parent, files, header.get("summary", ""))
        found.commits[sha] = files
        found.branches[rev] = sha
        host = f"http://{self.headers['Host']}"
        self._json(
            200,
            {"commitUrl": f"{host}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None},
        )

    def resolve(self, repo: str, rev: str, file: str) -> None:
        head = self.command == "HEAD"
        found = self._repo(repo, head=head)
        if found is None:
            return
        sha = found.resolve(rev)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
            return
        content = found.commits[sha].get(file)
        if content is None:
            self._error(404, "EntryNotFound", f"{file} does not exist at {rev}", head=head)
            return
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
            "Accept-Ranges": "bytes",
        }
        status, body = 200, content
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(content) - 1
            body = content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            status = 206
        self._send(status, body, headers, content_type="application/octet-stream", head=head)


class HubAPI:
    """The server, as a context manager: ``with HubAPI(token="...") as hub: hub.endpoint``."""

    def __init__(self, token: str | None = None):
        self.state = HubState(token)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.state.repos[repo_id]
        return dict(repo.commits[repo.resolve(revision) or ""])


@pytest.fixture
def hub_api():
    """A fresh :class:`HubAPI` that requires the token ``hf_test_secret_token_123``."""
    with HubAPI(token="hf_test_secret_token_123") as hub:
        yield hub
