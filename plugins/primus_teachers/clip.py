"""`clip-text` and `clip-video`: any Hugging Face CLIP checkpoint with projection heads, through
transformers (CLIPTextModelWithProjection / CLIPVisionModelWithProjection). The Hub endpoint and
cache come from huggingface_hub's environment (HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from primus_core.errors import ComponentError

from .base import Teacher, folder_digest, freeze, quiet_transformers
from .config import CLIPTextConfig, CLIPVideoConfig
from .video import FrameTeacher

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _source(config: CLIPTextConfig | CLIPVideoConfig) -> tuple[str, dict[str, Any]]:
    """(name or path, from_pretrained kwargs)."""
    local = Path(config.model_id).expanduser()
    if local.is_dir():
        return str(local), {}
    return config.model_id, {"revision": config.revision}


def _model_identity(kind: str, config: CLIPTextConfig | CLIPVideoConfig) -> str:
    local = Path(config.model_id).expanduser()
    if local.is_dir():
        return f"{kind}|local:{folder_digest(local)}"
    return f"{kind}|{config.model_id}@{config.revision}"


def _load_error(config, exc: Exception) -> ComponentError:
    return ComponentError(
        f"cannot load CLIP checkpoint '{config.model_id}' at revision '{config.revision}': "
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    )


def _hub_config(config: CLIPTextConfig | CLIPVideoConfig) -> dict[str, Any]:
    """The checkpoint's config.json (a Hub download of one small file, or the local folder's)."""
    local = Path(config.model_id).expanduser()
    try:
        if local.is_dir():
            path = local / "config.json"
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(config.model_id, "config.json", revision=config.revision)
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # Hub errors are OSErrors; bad JSON a ValueError
        raise _load_error(config, exc) from None


def _projection_dim(config: CLIPTextConfig | CLIPVideoConfig, tower: str) -> int:
    """What the tower model will use: the tower's sub-config value, else transformers' 512."""
    data = _hub_config(config)
    sub = data.get(tower) or data
    return int(sub.get("projection_dim") or 512)


class CLIPTextTeacher(Teacher):
    """Texts -> CLIP text embeddings (tokenizer, text tower, projection, L2-normalised)."""

    modality = "text"
    config: CLIPTextConfig

    @property
    def output_size(self) -> int:
        if self._loaded:
            return int(self.model.config.projection_dim)
        return _projection_dim(self.config, "text_config")

    def _identity(self) -> str:
        return _model_identity("clip-text", self.config) + f"|len{self.config.max_length}"

    def _load(self) -> None:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        name, kwargs = _source(self.config)
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
                model = CLIPTextModelWithProjection.from_pretrained(name, **kwargs)
        except OSError as exc:
            raise _load_error(self.config, exc) from None
        self.model = freeze(model, self.device)

    def _embed_batch(self, batch: list[Any]) -> torch.Tensor:
        if not all(isinstance(t, str) for t in batch):
            raise ComponentError("clip-text embeds strings; got " + type(batch[0]).__name__)
        tokens = self.tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        ).to(self.device)
        return self.model(**tokens).text_embeds


class CLIPVideoTeacher(FrameTeacher):
    """Clips -> mean of CLIP image embeddings of their frames (at fps), L2-normalised."""

    config: CLIPVideoConfig
    mean, std = CLIP_MEAN, CLIP_STD

    @property
    def output_size(self) -> int:
        if self._loaded:
            return int(self.model.config.projection_dim)
        return _projection_dim(self.config, "vision_config")

    def _identity(self) -> str:
        return _model_identity("clip-video", self.config) + "|" + self._frame_params()

    def _load(self) -> None:
        from transformers import CLIPVisionModelWithProjection

        name, kwargs = _source(self.config)
        try:
            with quiet_transformers():
                model = CLIPVisionModelWithProjection.from_pretrained(name, **kwargs)
        except OSError as exc:
            raise _load_error(self.config, exc) from None
        self.model = freeze(model, self.device)
        self.image_size = int(model.config.image_size)

    def _embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).image_embeds
