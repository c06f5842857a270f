import argparse
import json
import pathlib

import pytest
import torch
from safetensors import safe_open

import primus_core
from primus_core.errors import ModelDirError
from primus_core.zoo.modeldir import convert_reference, load_model_dir, save_model_dir


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def reference_checkpoint(path, encoder, extra_entries=None):
    """A checkpoint shaped like the reference code's Lightning file."""
    state = {f"imu_encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["clip_model.text_projection"] = torch.randn(8, 8)  # frozen teacher weights
    state["clip_model.visual.proj"] = torch.randn(8, 8)
    blob = {
        "epoch": 14,
        "global_step": 1234,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "optimizer_states": [],
        "lr_schedulers": [],
        "hyper_parameters": {
            "args": argparse.Namespace(lr=2e-4, batch_size=16),
            "path": pathlib.PosixPath("/data/egoexo"),
        },
        **(extra_entries or {}),
    }
    torch.save(blob, path)
    return path


def test_convert_reference_round_trip(tmp_path, cli):
    torch.manual_seed(0)
    original = primus_core.create("encoder", "stacked-rnn").eval()
    ckpt = reference_checkpoint(tmp_path / "best_model.ckpt", original)
    out = tmp_path / "converted"
    result = cli("zoo", "convert-reference", ckpt, out)
    assert result.out.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["type"] == "stacked-rnn"
    assert (
        config["imu_contract"]["rate_hz"] == 50 and config["imu_contract"]["window_samples"] == 250
    )
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata()["primus_format"] == "primus-model-dir/1"
        assert not any(k.startswith("clip") for k in f.keys())
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: primus\nlicense: cc-by-4.0")
    loaded = primus_core.load_pretrained(out)
    x = torch.randn(5, 6, 250)
    with torch.no_grad():
        for head in ("emb", "ssl", "mmcl"):
            torch.testing.assert_close(loaded(x)[head], original(x)[head])


def test_bare_state_dict_and_existing_out_dir(tmp_path):
    encoder = primus_core.create("encoder", "stacked-rnn", ssl_dim=0)
    torch.save(encoder.state_dict(), tmp_path / "bare.pt")
    out = convert_reference(tmp_path / "bare.pt", tmp_path / "m")
    assert json.loads((out / "config.json").read_text())["encoder"]["params"]["ssl_dim"] == 0
    with pytest.raises(ModelDirError, match="already exists"):
        convert_reference(tmp_path / "bare.pt", tmp_path / "m")
    convert_reference(tmp_path / "bare.pt", tmp_path / "m", overwrite=True)


def test_untrusted_objects_are_refused_and_nothing_is_written(tmp_path, cli):
    encoder = primus_core.create("encoder", "stacked-rnn")
    ckpt = reference_checkpoint(tmp_path / "evil.ckpt", encoder, {"callbacks": Evil()})
    result = cli("zoo", "convert-reference", ckpt, tmp_path / "out", expect=1)
    assert "refused to load" in result.err and "pwned" not in result.out
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.ckpt"]


def test_missing_and_unexpected_keys_are_listed(tmp_path, cli):
    state = primus_core.create("encoder", "stacked-rnn").state_dict()
    del state["backbone.4.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(
        {"state_dict": {f"imu_encoder.{k}": v for k, v in state.items()}}, tmp_path / "c.ckpt"
    )
    result = cli("zoo", "convert-reference", tmp_path / "c.ckpt", tmp_path / "out", expect=1)
    assert "missing keys: backbone.4.bias" in result.err
    assert "unexpected keys: extra.weight" in result.err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    result = cli("zoo", "convert-reference", tmp_path / "junk.ckpt", tmp_path / "out", expect=1)
    assert "junk.ckpt" in result.err and not (tmp_path / "out").exists()


def test_failed_write_leaves_no_directory(tmp_path, monkeypatch):
    encoder = primus_core.create("encoder", "stacked-rnn")
    import primus_core.zoo.modeldir as modeldir

    def broken_card(config, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(modeldir, "model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        save_model_dir(encoder, tmp_path / "m", encoder_type="stacked-rnn", encoder_params={})
    assert list(tmp_path.iterdir()) == []


def test_model_dir_errors(tmp_path):
    with pytest.raises(ModelDirError, match="not a model directory"):
        load_model_dir(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(ModelDirError, match="missing config.json"):
        load_model_dir(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text("{bad")
    with pytest.raises(ModelDirError, match="invalid JSON at line 1"):
        load_model_dir(tmp_path / "d")
    encoder = primus_core.create("encoder", "stacked-rnn")
    save_model_dir(encoder, tmp_path / "m", encoder_type="stacked-rnn", encoder_params={})
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelDirError, match="unreadable safetensors"):
        load_model_dir(tmp_path / "m")


def test_weights_of_the_wrong_shape_or_keys_are_refused_at_load(tmp_path):
    """load_model_dir checks the weight file against the encoder config.json describes: a tensor
    of another shape, a missing and an unexpected key are each one ModelDirError naming them."""
    from safetensors.torch import load_file, save_file

    params = {"conv_channels": 8, "hidden_size": 16, "ssl_dim": 0, "mmcl_dim": 8}
    encoder = primus_core.create("encoder", "stacked-rnn", **params)
    out = save_model_dir(encoder, tmp_path / "m", encoder_type="stacked-rnn", encoder_params=params)
    weights = out / "model.safetensors"
    state = load_file(str(weights))
    assert tuple(state["mmcl_head.weight"].shape) == (8, 16)  # mmcl_dim x hidden_size
    load_model_dir(out)  # untouched: loads

    save_file({**state, "mmcl_head.weight": torch.zeros(8, 15)}, str(weights))
    with pytest.raises(
        ModelDirError, match=r"shape mismatch: mmcl_head\.weight \(8, 15\) != \(8, 16\)"
    ):
        load_model_dir(out)

    dropped = {k: v for k, v in state.items() if k != "mmcl_head.bias"}
    save_file({**dropped, "extra.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(ModelDirError) as info:
        load_model_dir(out)
    message = str(info.value)
    assert "missing keys: mmcl_head.bias" in message and "unexpected keys: extra.weight" in message
