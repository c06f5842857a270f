"""Model directories (model.safetensors + config.json + README.md) and the import of reference
PRIMUS checkpoints. Weights are only ever read from safetensors or with weights_only unpickling."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..version import __version__
from ..components import create, provenance
from ..errors import ComponentError, ModelDirError, PrimusError
from ..paths import plain_modes

FORMAT = "primus-model-dir/1"
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
REFERENCE_PREFIX = "imu_encoder."


# ---------------------------------------------------------------- writing
def atomic_dir(out_dir: Path, overwrite: bool = False):
    """Context manager: yields a temporary sibling directory that becomes ``out_dir`` on success."""
    return _AtomicDir(Path(out_dir), overwrite)


class _AtomicDir:
    def __init__(self, target: Path, overwrite: bool):
        self.target, self.overwrite = target, overwrite

    def __enter__(self) -> Path:
        if self.target.exists() and not self.overwrite:
            raise ModelDirError(f"{self.target} already exists (use --overwrite to replace it)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent)
        )
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        plain_modes(self.tmp)
        old = None
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old-{os.getpid()}")
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def save_model_dir(
    encoder: torch.nn.Module,
    out_dir: str | Path,
    *,
    encoder_type: str,
    encoder_params: dict[str, Any],
    extra_config: dict[str, Any] | None = None,
    card: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``encoder`` as a model directory, atomically."""
    out_dir = Path(out_dir)
    extra_config = dict(extra_config or {})
    config = {
        "format": FORMAT,
        "encoder": {
            "type": encoder_type,
            "params": encoder_params,
            "provenance": provenance("encoder", encoder_type),
        },
        "imu_contract": encoder.imu_contract.model_dump(),
        "output_sizes": dict(encoder.output_sizes),
        "primus_version": __version__,
        **(extra_config or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in encoder.state_dict().items()}
    metadata = {
        "format": "pt",
        "primus_format": FORMAT,
        "primus_version": __version__,
        "torch_version": torch.__version__,
        "encoder_type": encoder_type,
    }
    with atomic_dir(out_dir, overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        (tmp / CARD).write_text(card if card is not None else model_card(config))
    return out_dir


def model_card(
    config: dict[str, Any], *, license: str = "cc-by-4.0", title: str | None = None, body: str = ""
) -> str:
    """A Hugging Face model card with front matter, from a model directory's config."""
    contract = config["imu_contract"]
    datasets = config.get("training_data") or []
    results = config.get("evaluation") or []
    front = [
        "---",
        "library_name: primus",
        f"license: {license}",
        "tags:",
        "  - imu",
        "  - human-activity-recognition",
        "  - primus",
        "  - time-series",
    ]
    if datasets:
        front += ["datasets:"] + [f"  - {d}" for d in datasets]
    if results:
        front += ["metrics:", "  - accuracy", "  - f1"]
    front.append("---")
    encoder = config["encoder"]
    lines = [
        f"# {title or config.get('name', 'primus IMU encoder')}",
        "",
        body or "An IMU encoder in the primus model-directory format.",
        "",
        f"- encoder: `{encoder['type']}` {json.dumps(encoder['params'])}{_origin(encoder)}",
        f"- input: {len(contract['channels'])} channels ({', '.join(contract['channels'])}), "
        f"{contract['rate_hz']:g} Hz, {contract['window_samples']} samples",
        f"- outputs: {', '.join(f'{k} ({v})' for k, v in config['output_sizes'].items())}",
    ]
    if config.get("recipe"):
        lines.append(
            f"- recipe: `{config['recipe'].get('name')}` (hash {config.get('recipe_hash')})"
        )
    if results:
        lines += [
            "",
            "## Evaluation",
            "",
            "| dataset | mode | shots | accuracy | macro-F1 |",
            "|---|---|---|---|---|",
        ]
        for row in results:
            lines.append(
                f"| {row.get('dataset')} | {row.get('mode')} | {row.get('shots')} | "
                f"{row.get('accuracy', float('nan')):.3f} | {row.get('macro_f1', float('nan')):.3f} |"
            )
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import primus_core",
        "encoder = primus_core.load_pretrained('PATH_OR_NAME')",
        "```",
        "",
    ]
    return "\n".join(front + [""] + lines)


def _origin(encoder: dict[str, Any]) -> str:
    origin = encoder.get("provenance") or {}
    if not origin.get("distribution"):
        return ""
    return f", from the plugin `{origin['plugin']}` ({origin['distribution']} {origin['version']})"


# ---------------------------------------------------------------- reading
def read_model_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path}: not a model directory")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise ModelDirError(
            f"{path}: missing {CONFIG} (weights are never loaded without their config)"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirError(
            f"{config_path}: invalid JSON at line {exc.lineno}: {exc.msg}"
        ) from None
    if not isinstance(config, dict) or "encoder" not in config:
        raise ModelDirError(f"{config_path}: not a primus model config (no 'encoder' entry)")
    encoder = config["encoder"]
    if not isinstance(encoder, dict) or not isinstance(encoder.get("type"), str):
        raise ModelDirError(
            f"{config_path}: 'encoder' must be a mapping with a 'type' name (got {encoder!r:.80})"
        )
    if not isinstance(encoder.get("params", {}), dict):
        raise ModelDirError(f"{config_path}: 'encoder.params' must be a mapping")
    return config


def load_model_dir(path: str | Path, device: str | torch.device | None = None) -> torch.nn.Module:
    """Build the encoder a model directory describes and load its weights (eval mode)."""
    path = Path(path)
    config = read_model_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise ModelDirError(f"{path}: missing {WEIGHTS}")
    try:
        encoder = create(
            "encoder", config["encoder"]["type"], **config["encoder"].get("params", {})
        )
    except ComponentError as exc:
        raise ModelDirError(f"{path / CONFIG}: {exc}{install_hint(config)}") from None
    check_declared(encoder, config, path / CONFIG)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise ModelDirError(f"{weights}: unreadable safetensors file ({exc})") from None
    check_keys(encoder, state, str(weights))
    check_finite(state, str(weights))
    encoder.load_state_dict(state)
    encoder.eval()
    return encoder.to(device) if device is not None else encoder


def install_hint(config: dict[str, Any]) -> str:
    """What to install when the plugin that provided the encoder is missing (from config.json's
    provenance)."""
    from ..components import has_component

    encoder = config["encoder"]
    origin = encoder.get("provenance")
    if not isinstance(origin, dict) or has_component("encoder", encoder["type"]):
        return ""
    dist, version = origin.get("distribution"), origin.get("version")
    if not dist:
        return f" (it came from the plugin '{origin.get('plugin')}')"
    pin = f"=={version}" if version else ""
    return (
        f". It is provided by the plugin distribution '{dist}' (version {version or '?'}): "
        f"pip install '{dist}{pin}'"
    )


def check_declared(encoder: torch.nn.Module, config: dict[str, Any], source: Path) -> None:
    """config.json's ``imu_contract`` and ``output_sizes``, when given, must be what the encoder
    it describes really has (a model is never fed windows of another shape than it declares)."""
    built = {
        "imu_contract": encoder.imu_contract.model_dump(),
        "output_sizes": dict(encoder.output_sizes),
    }
    for key, actual in built.items():
        declared = config.get(key)
        if declared is not None and declared != actual:
            raise ModelDirError(
                f"{source}: '{key}' says {json.dumps(declared)} but the encoder it describes has "
                f"{json.dumps(actual)}"
            )


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf: they would give NaN embeddings without a word."""
    bad = [
        f"{name} ({int((~torch.isfinite(t)).sum())} of {t.numel()})"
        for name, t in state.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ModelDirError(f"{source}: weights hold NaN/inf values: {shown}")


def check_keys(encoder: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        raise ModelDirError(f"{source}: weights do not match the encoder ({'; '.join(parts)})")
    bad = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ModelDirError(f"{source}: shape mismatch: {', '.join(bad)}")


# ---------------------------------------------------------------- reference checkpoints
# Lightning writes these non-tensor objects into checkpoints; they are inert data containers.
LIGHTNING_SAFE_GLOBALS = [
    argparse.Namespace,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
]


def read_reference_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a reference Lightning checkpoint or a bare state dict."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelDirError(f"{ckpt}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(LIGHTNING_SAFE_GLOBALS):
            blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelDirError(
            f"{ckpt}: refused to load: it holds objects other than tensors and plain data "
            f"({first[:200]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise ModelDirError(
            f"{ckpt}: not a readable PyTorch checkpoint ({str(exc)[:200]})"
        ) from None
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise ModelDirError(
            f"{ckpt}: expected a state dict or a Lightning checkpoint with 'state_dict'"
        )
    prefixed = {
        k[len(REFERENCE_PREFIX) :]: v for k, v in state.items() if k.startswith(REFERENCE_PREFIX)
    }
    encoder_state = prefixed or state
    tensors = {k: v for k, v in encoder_state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelDirError(
            f"{ckpt}: no encoder tensors found (expected keys '{REFERENCE_PREFIX}*')"
        )
    return tensors


def infer_stacked_rnn_params(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Encoder parameters implied by the weight shapes (hidden size, heads, channels)."""
    try:
        hidden = state["backbone.5.weight_hh_l0"].shape[1]
        channels = state["backbone.0.weight"].shape[0]
        conv = state["backbone.1.net.0.weight"].shape[0]
    except KeyError as exc:
        raise ModelDirError(f"not a stacked-RNN state dict: missing key {exc}") from None
    params: dict[str, Any] = {"hidden_size": int(hidden), "conv_channels": int(conv)}
    params["ssl_dim"] = int(state["ssl_head.weight"].shape[0]) if "ssl_head.weight" in state else 0
    params["mmcl_dim"] = (
        int(state["mmcl_head.weight"].shape[0]) if "mmcl_head.weight" in state else 0
    )
    if channels != 6:
        raise ModelDirError(f"reference checkpoints have 6 input channels, this one has {channels}")
    return params


def convert_reference(
    ckpt: str | Path, out_dir: str | Path, *, variant: str = "stacked-rnn", overwrite: bool = False
) -> Path:
    """Convert a reference PRIMUS checkpoint to a model directory (teacher weights are dropped)."""
    state = read_reference_state(ckpt)
    params = infer_stacked_rnn_params(state)
    encoder = create("encoder", variant, **params)
    check_keys(encoder, state, str(ckpt))
    check_finite(state, str(ckpt))
    encoder.load_state_dict(state)
    extra = {
        "name": f"PRIMUS reference encoder ({Path(ckpt).name})",
        "source": {
            "file": Path(ckpt).name,
            "converted_by": f"primus {__version__}",
            "python": platform.python_version(),
        },
        "teachers": ["clip-text", "clip-video"],
        "training_data": ["egoexo4d"],
    }
    return save_model_dir(
        encoder,
        out_dir,
        encoder_type=variant,
        encoder_params=params,
        extra_config=extra,
        overwrite=overwrite,
    )
