"""Sharing checkpoints on the Hugging Face Hub (the `hf` extra).

`push` uploads a checkpoint directory (config, weights, task file) with a generated model card; `download`
fetches one into the Hub cache, so every place that takes a checkpoint path also takes a Hub id,
`org/name` or `org/name@revision`: `resolve_checkpoint` tries the Hub only for a path that does not exist
and has exactly that shape. Every failure of the Hub client (not installed, no network, unknown repo or
revision, no permission) is one `HubError` line.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from trm.config import ModelConfig
from trm.errors import CheckpointError

# Hub repo ids: a namespace and a name of letters, digits, '-', '_', '.'; a revision is a branch, tag or commit.
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HUB_ID = re.compile(rf"^({_PART}/{_PART})(?:@([A-Za-z0-9][A-Za-z0-9._/-]{{0,199}}))?$")
FILES = ("config.json", "model.safetensors", "task.json")  # what a trm checkpoint is; task.json is optional
INSTALL = "pip install 'trm[hf]'"


class HubError(CheckpointError):
    """The Hub could not give or take a checkpoint (one line, exit status 2)."""


def parse_hub_id(text: str | Path) -> tuple[str, str | None] | None:
    """(repo_id, revision) when `text` is not an existing path and looks like `org/name[@revision]`."""
    text = str(text)
    match = HUB_ID.match(text)
    if match is None or Path(text).exists() or ".." in text or "--" in match.group(1):  # as the Hub refuses them
        return None
    return match.group(1), match.group(2)


def _hub(what: str):
    """The huggingface_hub module; without it, one line saying what needed it."""
    try:
        import huggingface_hub
    except ImportError:
        raise HubError(f"{what} needs huggingface_hub: {INSTALL}") from None
    if not sys.stderr.isatty():  # a redirected download bar is one long line of carriage returns
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return huggingface_hub


def _reason(err: Exception, repo_id: str, revision: str | None) -> str:
    """One line for a Hub client failure. The client raises different network exceptions in different
    versions (requests, httpx), so anything that is not one of its own errors is named by its type."""
    from huggingface_hub import utils

    at = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(err, utils.GatedRepoError):
        return f"{at}: a gated repository; accept its terms on the Hub and log in (hf auth login or --token)"
    if isinstance(err, utils.RevisionNotFoundError):
        return f"{at}: no revision {revision!r} in the Hub repository {repo_id}"
    if isinstance(err, utils.RepositoryNotFoundError):
        return f"{at}: no such Hub repository (or a private one: log in with hf auth login or pass --token)"
    if isinstance(err, utils.LocalEntryNotFoundError):
        return f"{at}: cannot reach the Hub and the checkpoint is not in the local Hub cache"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, utils.HfHubHTTPError):
        return f"{at}: the Hub refused the request ({first})"
    return f"{at}: Hub request failed ({type(err).__name__}: {first})"


def download(hub_id: str) -> Path:
    """The local snapshot directory of a checkpoint on the Hub (downloaded once, then served from the Hub
    cache; HF_HUB_OFFLINE=1 uses the cache only; a private repository needs HF_TOKEN or `hf auth login`)."""
    parsed = parse_hub_id(hub_id)
    if parsed is None:
        raise HubError(f"{hub_id}: not a Hub id (org/name or org/name@revision)")
    repo_id, revision = parsed
    hub = _hub(f"{hub_id}: no such local checkpoint; as a Hub id it")
    try:
        path = Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=list(FILES)))
    except Exception as err:  # the client's network errors differ by version: see _reason
        raise HubError(f"{hub_id}: no such local checkpoint; {_reason(err, repo_id, revision)}") from err
    missing = [name for name in FILES[:2] if not (path / name).is_file()]
    if missing:
        raise HubError(f"{hub_id}: the Hub repository is not a trm checkpoint (no {' or '.join(missing)})")
    return path


def run_metrics(checkpoint: Path) -> tuple[dict[str, float], Path | None]:
    """The held-out metrics that the run logged when it saved this checkpoint (its `metrics.jsonl` eval line
    at the checkpoint's step), and the run directory; nothing when the checkpoint is not inside a run."""
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None
    step = checkpoint.name.removeprefix("step_")
    if run_dir is None or not step.isdigit() or not (run_dir / "metrics.jsonl").is_file():
        return {}, None
    found: dict[str, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted run
        if isinstance(record, dict) and record.get("split") == "eval" and record.get("step") == int(step):
            found = {k: v for k, v in record.items() if k not in ("split", "step") and isinstance(v, (int, float))}
    return found, run_dir


def architecture_line(cfg: ModelConfig) -> str:
    """The fields that describe this arch (HRM's two networks, TRM's ablation switches when set)."""
    if cfg.arch == "transformer":
        shape = f"{cfg.num_layers} layers, one pass per supervision step"
    elif cfg.arch == "hrm":
        shape = f"T={cfg.T}, n={cfg.n}, f_L {cfg.num_layers} + f_H {cfg.h_layers} layers"
    else:
        shape = f"T={cfg.T}, n={cfg.n}, {cfg.num_layers} layers"
        for name, default in (("latent", "yz"), ("gradient", "last_block")):
            if getattr(cfg, name) != default:
                shape += f", {name}={getattr(cfg, name)}"
        if cfg.latent == "multi":
            shape += f", num_z={cfg.z_count}"
    if cfg.conv_kernel:
        shape += f", ConvSwiGLU k={cfg.conv_kernel}"
    return f"{cfg.arch} ({shape}, N_sup={cfg.N_sup}, {cfg.mixer})"


def model_card(model, checkpoint: Path, repo_id: str, metrics: dict[str, float], run_dir: Path | None) -> str:
    """README.md for the Hub: what the model is, its size, what it measured, how to use it, its config."""
    import yaml

    cfg = model.config
    task = _task_line(checkpoint)
    table_rows = model.state_dict().get("puzzle_emb.weight")
    rows = [
        ("architecture", architecture_line(cfg)),
        ("trainable parameters", f"{model.num_parameters():,}"),
        ("task", task or "unknown (no task.json)"),
        ("sequence length / vocabulary", f"{cfg.seq_len} / {cfg.vocab_size}"),
    ]
    if table_rows is not None:
        rows.append(("puzzle-embedding table", f"{table_rows.shape[0]:,} x {table_rows.shape[1]} (not trained by SGD)"))
    lines = [
        "---",
        "library_name: trm",
        f"tags: [trm, tiny-recursive-model, {cfg.arch}" + (f", {task.split()[0]}]" if task else "]"),
        "---",
        "",
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A {cfg.arch.upper()} checkpoint for [trm](https://arxiv.org/abs/2510.04871) (Tiny Recursive Models).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "## Measured",
        "",
    ]
    if metrics:
        source = f"`{run_dir.name}/metrics.jsonl`" if run_dir else "the run"
        lines += [
            f"The run's held-out evaluation at {checkpoint.name} ({source}):",
            "",
            "| metric | value |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items()]
    else:
        lines.append("No evaluation was recorded with this checkpoint; measure it with `trm eval`.")
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f"pip install 'trm[hf]'\ntrm info {repo_id}\ntrm solve {repo_id} PUZZLE_OR_FILE\ntrm eval {repo_id} DATA_DIR",
        "```",
        "",
        "```python",
        f'from trm.models import RecursiveModel\nmodel = RecursiveModel.from_pretrained("{repo_id}")',
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(cfg.model_dump(), sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _task_line(checkpoint: Path) -> str | None:
    try:
        info = json.loads((checkpoint / "task.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or "task" not in info:
        return None
    size = info.get("size")
    return f"{info['task']} {size}x{size}" if size else str(info["task"])


def push(checkpoint: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a checkpoint (or a run directory's newest one) with a model card to the Hub model repository
    `repo_id` (created if needed); returns the repository's URL."""
    from trm.models.base import load_checkpoint

    if HUB_ID.match(repo_id) is None or "@" in repo_id:
        raise HubError(f"{repo_id}: not a Hub repository id (org/name)")
    model, path = load_checkpoint(checkpoint)
    metrics, run_dir = run_metrics(path)
    hub = _hub("trm push")
    with tempfile.TemporaryDirectory(prefix="trm-push-") as tmp:
        staged = Path(tmp)
        for name in FILES:
            if (path / name).is_file():
                shutil.copy2(path / name, staged / name)
        (staged / "README.md").write_text(model_card(model, path, repo_id, metrics, run_dir))
        try:
            url = hub.create_repo(repo_id, private=private, token=token, exist_ok=True)
            hub.upload_folder(repo_id=repo_id, folder_path=staged, token=token, commit_message=f"trm push {path.name}")
        except Exception as err:  # the client's network errors differ by version: see _reason
            raise HubError(f"cannot push to the Hub: {_reason(err, repo_id, None)}") from err
    return str(url)
