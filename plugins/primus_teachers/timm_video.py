"""`timm-video`: any timm image model (Hub weights through timm's ``hf-hub:`` names) embedding
the frames of a clip, averaged and L2-normalised like `clip-video`."""

from __future__ import annotations

import torch

from primus_core.errors import ComponentError

from .base import freeze
from .config import TimmVideoConfig
from .video import FrameTeacher


class TimmVideoTeacher(FrameTeacher):
    """Clips -> mean of a timm image model's frame embeddings, L2-normalised."""

    config: TimmVideoConfig

    @property
    def model_name(self) -> str:
        name, rev = self.config.model_name, self.config.revision
        if rev and name.startswith("hf-hub:") and "@" not in name:
            return f"{name}@{rev}"
        return name

    @property
    def output_size(self) -> int:
        self.load()
        return self._output_size

    def _identity(self) -> str:
        c = self.config
        weights = "pretrained" if c.pretrained else "random"
        head = "head" if c.keep_head else "pooled"
        return f"timm-video|{self.model_name}|{weights}|{head}|{self._frame_params()}"

    def _load(self) -> None:
        import timm
        from timm.data import resolve_data_config

        kwargs = {} if self.config.keep_head else {"num_classes": 0}
        try:
            model = timm.create_model(self.model_name, pretrained=self.config.pretrained, **kwargs)
        except (RuntimeError, OSError, ValueError) as exc:
            raise ComponentError(
                f"cannot create timm model '{self.model_name}': {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        data = resolve_data_config({}, model=model)
        self.image_size = int(data["input_size"][-1])
        self.mean = tuple(float(m) for m in data["mean"])
        self.std = tuple(float(s) for s in data["std"])
        self.model = freeze(model, self.device)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)
            self._output_size = int(self.model(probe).shape[-1])

    def _embed_frames(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
