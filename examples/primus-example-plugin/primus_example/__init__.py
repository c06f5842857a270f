"""primus-example-plugin: registers the encoder `stats-mlp` and the command `primus stats-mlp-info`.

A third-party plugin is a module with functions decorated by ``primus_core.hookimpl``; the names
of the functions and of their arguments must match the hook specifications (primus_core/specs.py).

This module stays light (pydantic and click only): the encoder is registered by name,
``"primus_example.encoder:StatsMLPEncoder"``, so that ``primus --help`` or ``primus components
list`` never import torch; ``primus_core.create`` imports it on first use.
"""

import click
from pydantic import BaseModel, ConfigDict, Field

import primus_core
from primus_core.config import PRIMUS_CHANNELS, PRIMUS_UNITS


class StatsMLPConfig(BaseModel):
    """Per-channel mean/std/min/max statistics through a two-layer MLP."""

    model_config = ConfigDict(extra="forbid")  # typos in recipes become errors

    # the encoder contract: declare channels (names from the contract vocabulary, in input
    # order), rate and window; the trainer sets mmcl_dim to the teachers' output size
    channels: list[str] = Field(
        default_factory=lambda: list(PRIMUS_CHANNELS), description="channel names, in order"
    )
    units: list[str] = Field(
        default_factory=lambda: list(PRIMUS_UNITS), description="unit of each channel"
    )
    rate_hz: float = Field(50.0, gt=0, description="sampling rate of the input")
    window_samples: int = Field(250, gt=0, description="samples per window")
    hidden_size: int = Field(64, gt=0, description="size of 'emb'")
    mmcl_dim: int = Field(32, ge=0, description="size of the 'mmcl' head (0: none)")


@primus_core.hookimpl
def register_encoders(register):
    register("stats-mlp", "primus_example.encoder:StatsMLPEncoder", config=StatsMLPConfig)


@primus_core.hookimpl
def register_commands(cli):
    @cli.command("stats-mlp-info")
    def stats_mlp_info():
        """Parameter count of the default stats-mlp encoder."""
        encoder = primus_core.create("encoder", "stats-mlp")
        click.echo(sum(p.numel() for p in encoder.parameters()))
