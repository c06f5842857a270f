"""A tiny randomly initialised CLIP (both towers, tokenizer) saved with save_pretrained: a local
folder that works as a teacher's model_id, or a repo for the local Hub."""

from __future__ import annotations

from pathlib import Path

import torch


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: a printable symbol for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]


def make_tiny_clip(folder: Path) -> None:
    """A randomly initialised CLIP with 32-wide towers, 16-d projections and its tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    symbols = _byte_symbols()
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("i", "n"), ("in", "g</w>")]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    CLIPTokenizer(vocab=vocab, merges=merges).save_pretrained(folder)
    tower = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=16,
    )
    config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(tower, image_size=224, patch_size=32),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)
