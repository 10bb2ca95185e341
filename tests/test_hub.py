"""Hugging Face Hub checkpoints: `trm push` and Hub ids wherever a checkpoint is taken, through the real
huggingface_hub functions (create_repo, upload_folder, snapshot_download) talking HTTP to `FakeHub`, an
in-process stand-in for the Hub API mounted as the client's transport. No network is used."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch

from trm.cli import main
from trm.config import ModelConfig
from trm.hub import parse_hub_id
from trm.models import TRM, RecursiveModel
from trm.tasks import sudoku

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.utils import _http  # noqa: E402

PUZZLE = ".13.....3..4...."  # 4x4, one solution


class FakeHub:
    """The Hub endpoints the client calls for create_repo, upload_folder and snapshot_download, over an
    in-memory store: repo id -> commits (sha, {path: bytes}). Unknown repos answer as the Hub does (401 with
    X-Error-Code RepoNotFound), unknown revisions 404 RevisionNotFound. Every file is accepted as a regular
    (non-LFS) upload, which the Hub may answer for any file."""

    def __init__(self, httpx):
        self.httpx = httpx
        self.repos: dict[str, dict] = {}
        self.requests: list[str] = []

    def files(self, repo_id: str, revision: str = "main") -> tuple[str | None, dict[str, bytes]]:
        for sha, files in reversed(self.repos[repo_id]["commits"]):
            if revision in ("main", sha):
                return sha, files
        return None, {}

    def __call__(self, request):
        path, method = unquote(request.url.path), request.method
        self.requests.append(f"{method} {path}")
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            url = f"https://huggingface.co/{repo_id}"
            if repo_id in self.repos:
                return self._json(409, {"error": "You already created this model repo", "url": url})
            private = body.get("private") or body.get("visibility") == "private"  # the field's name by version
            self.repos[repo_id] = {"private": bool(private), "commits": []}
            return self._json(200, {"url": url})
        if path == "/api/validate-yaml":
            return self._json(200, {})
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|revision|tree)/([^/]+)", path):
            return self._api(*m.groups(), request)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo_id, revision, name = m.groups()
            if repo_id not in self.repos:
                return self._json(401, {"error": "Repository not found"}, "RepoNotFound")
            sha, files = self.files(repo_id, revision)
            if name not in files:
                return self._json(404, {"error": "Entry not found"}, "EntryNotFound")
            body = files[name]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(body).hexdigest()}"'}
            return self.httpx.Response(200, headers=headers, content=b"" if method == "HEAD" else body)
        return self._json(404, {"error": "not found"})

    def _api(self, repo_id: str, what: str, revision: str, request):
        if repo_id not in self.repos:
            return self._json(401, {"error": "Repository not found"}, "RepoNotFound")
        if what == "preupload":
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return self._json(200, {"files": modes})
        if what == "commit":
            files = dict(self.files(repo_id)[1])
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            sha = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
            self.repos[repo_id]["commits"].append((sha, files))
            url = f"https://huggingface.co/{repo_id}/commit/{sha}"
            return self._json(200, {"commitUrl": url, "commitOid": sha, "success": True})
        sha, files = self.files(repo_id, revision)
        if sha is None:
            return self._json(404, {"error": "Invalid rev id"}, "RevisionNotFound")
        if what == "revision":
            siblings = [{"rfilename": p} for p in files]
            return self._json(200, {"id": repo_id, "sha": sha, "private": False, "siblings": siblings})
        tree = [
            {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()} for p, b in files.items()
        ]
        return self._json(200, tree)

    def _json(self, status: int, body, code: str | None = None):
        return self.httpx.Response(status, json=body, headers={"X-Error-Code": code} if code else {})


def _httpx_module():
    """The HTTP library this huggingface_hub version uses (httpx, or httpx2 in 2.x); the old requests-based
    versions have no client factory to mount a transport on."""
    if not hasattr(_http, "set_client_factory"):
        pytest.skip("this huggingface_hub version has no HTTP client factory")
    return sys.modules[type(_http.get_session()).__module__.split(".")[0]]


def use_transport(monkeypatch, handler) -> None:
    """huggingface_hub's own client (its request hook: offline mode, request ids) with `handler` as the network."""
    httpx = _httpx_module()
    monkeypatch.setattr(_http, "_GLOBAL_CLIENT_FACTORY", _http._GLOBAL_CLIENT_FACTORY)  # restored after the test
    hooks = {"request": [_http.hf_request_event_hook]}
    _http.set_client_factory(
        lambda: httpx.Client(transport=httpx.MockTransport(handler), event_hooks=hooks, follow_redirects=True)
    )


@pytest.fixture
def hub(monkeypatch, tmp_path) -> FakeHub:
    """A fresh FakeHub behind huggingface_hub, with the Hub cache and the client's own files in tmp_path."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    if hasattr(constants, "AGENT_HARNESSES_PATH"):
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agents.json"))
    fake = FakeHub(_httpx_module())
    use_transport(monkeypatch, fake)
    yield fake
    _http.close_session()


def tiny(seed: int = 0) -> TRM:
    config = ModelConfig(
        vocab_size=11, seq_len=16, hidden_size=32, num_heads=2, num_layers=1, T=2, n=1, N_sup=3,
        mixer="mlp", pos_encoding="none", puzzle_emb_ndim=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    return TRM(config).eval()


def run_dir(root: Path, seed: int = 0, step: int = 7, exact: float = 0.625) -> Path:
    """A run directory as `trm train` leaves it: checkpoints/step_N (+ task.json), checkpoints/last, and
    metrics.jsonl with the evaluation at that step."""
    ckpt = root / "checkpoints" / f"step_{step}"
    tiny(seed).save_pretrained(ckpt)
    (ckpt / "task.json").write_text(json.dumps({"task": "sudoku", "size": 4}))
    (root / "checkpoints" / "last").write_text(f"step_{step}")
    lines = [
        {"split": "train", "step": step, "lm_loss": 1.5},
        {"split": "eval", "step": step - 2, "exact_accuracy": 0.125},
        {"split": "eval", "step": step, "exact_accuracy": exact, "accuracy": 0.75, "elapsed_s": 3.0},
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


def logits(model: RecursiveModel) -> torch.Tensor:
    inputs = torch.from_numpy(np.random.default_rng(1).integers(1, 6, size=(4, 16))).long()
    y, z = model.initial_state(4)
    with torch.no_grad():
        return model(y, z, inputs, torch.zeros(4, dtype=torch.long)).logits


def test_push_then_pull_gives_the_same_logits_and_a_model_card(hub, tmp_path, capsys):
    run = run_dir(tmp_path / "run")
    assert main(["push", str(run), "org/tiny", "--private", "--token", "hf_test"]) == 0
    assert "pushed" in capsys.readouterr().out and hub.repos["org/tiny"]["private"]
    _, files = hub.files("org/tiny")
    assert sorted(files) == ["README.md", "config.json", "model.safetensors", "task.json"]
    card = files["README.md"].decode()
    assert f"{tiny().num_parameters():,}" in card and "| exact_accuracy | 0.625 |" in card and "sudoku 4x4" in card
    assert "0.125" not in card  # the evaluation of the pushed checkpoint's step, not an earlier one
    assert card.startswith("---\nlibrary_name: trm\n")

    pulled = RecursiveModel.from_pretrained("org/tiny")
    assert type(pulled) is TRM and torch.equal(logits(pulled), logits(tiny()))
    assert torch.equal(logits(TRM.from_pretrained("org/tiny").eval()), logits(tiny()))
    assert Path(constants.HF_HUB_CACHE, "models--org--tiny").is_dir()  # through the Hub cache


def test_every_command_takes_a_hub_id(hub, tmp_path, capsys):
    assert main(["push", str(run_dir(tmp_path / "run")), "org/tiny", "--token", "t"]) == 0
    rng = np.random.default_rng(0)
    pairs = [(p, s) for p, s, _ in sudoku.generate(6, 4, rng)]
    sudoku.build_dataset(tmp_path / "data", pairs[:3], pairs[3:])
    capsys.readouterr()
    assert main(["info", "org/tiny"]) == 0
    assert f"trainable parameters: {tiny().num_parameters():,}" in capsys.readouterr().out
    assert main(["solve", "org/tiny", PUZZLE, "--device", "cpu"]) == 0
    assert "1 puzzle(s)" in capsys.readouterr().out
    assert main(["eval", "org/tiny", str(tmp_path / "data"), "--device", "cpu"]) == 0
    assert "exact_accuracy" in capsys.readouterr().out


def test_a_revision_pins_the_weights(hub, tmp_path, capsys):
    assert main(["push", str(run_dir(tmp_path / "a", seed=0)), "org/tiny", "--token", "t"]) == 0
    first = hub.files("org/tiny")[0]
    assert main(["push", str(run_dir(tmp_path / "b", seed=1)), "org/tiny", "--token", "t"]) == 0
    assert torch.equal(logits(RecursiveModel.from_pretrained(f"org/tiny@{first}")), logits(tiny(0)))
    assert torch.equal(logits(RecursiveModel.from_pretrained("org/tiny@main")), logits(tiny(1)))
    capsys.readouterr()
    assert main(["info", "org/tiny@v9"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no revision 'v9'" in err[0]


def test_offline_uses_the_cache_and_says_what_is_missing(hub, tmp_path, monkeypatch, capsys):
    assert main(["push", str(run_dir(tmp_path / "run")), "org/tiny", "--token", "t"]) == 0
    expected = logits(RecursiveModel.from_pretrained("org/tiny"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    assert torch.equal(logits(RecursiveModel.from_pretrained("org/tiny")), expected)
    assert hub.requests == []  # served from the cache alone
    assert main(["info", "org/other"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "cannot reach the Hub" in err[0] and "not in the local Hub cache" in err[0]


def test_unknown_repo_and_a_typo_in_a_local_path_are_one_line(hub, capsys):
    for argv in (["info", "org/nothing"], ["solve", "runs/s6x", PUZZLE], ["eval", "org/nothing", "data"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "no such local checkpoint" in err[0] and "no such Hub repository" in err[0]


def test_network_failure_is_one_line(tmp_path, monkeypatch, capsys):
    httpx = _httpx_module()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))

    def down(request):
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    use_transport(monkeypatch, down)
    try:
        assert main(["push", str(run_dir(tmp_path / "run")), "org/tiny", "--token", "t"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("trm: error: cannot push to the Hub: org/tiny: Hub request failed")
        assert main(["solve", "org/tiny", PUZZLE]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and "cannot reach the Hub" in err[0]
    finally:
        _http.close_session()


def test_without_huggingface_hub_the_error_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    assert main(["push", str(run_dir(tmp_path / "run")), "org/tiny"]) == 2
    assert main(["solve", "org/tiny", PUZZLE]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("pip install 'trm[hf]'" in line for line in err)
    assert err[1].startswith("trm: error: org/tiny: no such local checkpoint")


def test_card_without_a_run_says_no_evaluation(hub, tmp_path):
    tiny().save_pretrained(tmp_path / "ckpt")
    assert main(["push", str(tmp_path / "ckpt"), "someone/bare"]) == 0
    card = hub.files("someone/bare")[1]["README.md"].decode()
    assert "No evaluation was recorded" in card and "unknown (no task.json)" in card
    assert sorted(hub.files("someone/bare")[1]) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("org/name", ("org/name", None)),
        ("org/name@v1.0", ("org/name", "v1.0")),
        ("Org-1/my_model.v2@refs/pr/1", ("Org-1/my_model.v2", "refs/pr/1")),
        ("name", None),  # a preset name, or a bare local directory
        ("a/b/c", None),
        ("./org/name", None),
        ("/org/name", None),
        ("org/na..me", None),
        ("org/name@../../x", None),  # a revision names a file in the Hub cache: nothing outside it
        ("org/name@", None),
        ("-org/name", None),
    ],
)
def test_what_counts_as_a_hub_id(text, parsed):
    assert parse_hub_id(text) == parsed


def test_an_existing_local_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny().save_pretrained(tmp_path / "org" / "name")
    assert parse_hub_id("org/name") is None
    assert torch.equal(logits(RecursiveModel.from_pretrained("org/name")), logits(tiny()))


def test_a_bad_repo_id_is_refused_before_any_upload(tmp_path, capsys):
    tiny().save_pretrained(tmp_path / "ckpt")
    assert main(["push", str(tmp_path / "ckpt"), "no-namespace"]) == 2
    assert "not a Hub repository id" in capsys.readouterr().err
