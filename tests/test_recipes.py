import json

import pytest

import primus_core
from conftest import plugin_in_process
from primus_core.errors import RecipeError
from primus_core.registry.recipes import check_recipe, recipe_names, resolve_recipe

PAPER_RECIPES = {"primus", "primus-ss-mm", "imu2clip", "simclr", "supervised"}


def test_registry_holds_the_paper_recipes_and_offline_variants():
    names = set(recipe_names())
    assert PAPER_RECIPES <= names
    assert {f"{n}-hapt" for n in PAPER_RECIPES} <= names


def test_extends_merges_and_overrides_are_yaml_typed():
    base = primus_core.load_recipe("primus")
    child = primus_core.load_recipe("primus-ss-mm")
    assert [loss.type for loss in base.losses] == ["ss", "mm", "nn"]
    assert [loss.type for loss in child.losses] == ["ss", "mm"]
    assert child.encoder == base.encoder and child.train == base.train
    recipe = primus_core.load_recipe(
        "primus",
        [
            "train.batch_size=64",
            "train.lr=1e-3",
            "train.amp=false",
            "encoder.hidden_size=128",
            "losses.nn.queue_size=16",
            "losses.0.weight=2",
        ],
    )
    assert recipe.train.batch_size == 64 and recipe.train.lr == pytest.approx(1e-3)
    assert recipe.train.amp is False
    assert recipe.encoder.params == {"hidden_size": 128}
    assert recipe.losses[2].params["queue_size"] == 16 and recipe.losses[0].weight == 2.0


def test_recipe_file_by_path_extends_a_named_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: simclr\ndescription: mine\ntrain: {batch_size: 8}\n")
    recipe = primus_core.load_recipe(path)
    assert recipe.name == "mine" and recipe.train.batch_size == 8
    assert [loss.type for loss in recipe.losses] == ["ss"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size", "expected KEY.PATH=VALUE"),
        ("train..x=1", "empty key"),
        ("train.batch_size=-3", r"train.batch_size: Input should be greater than 0"),
        ("train.batch_size=abc", r"train.batch_size: Input should be a valid integer"),
        ("train.bach_size=3", r"train.bach_size: Extra inputs are not permitted"),
        ("losses.zz.weight=1", "no entry of type 'zz'"),
        ("losses.9.weight=1", "index 9 out of range"),
        ("train.batch_size.x=1", "is not a mapping"),
    ],
)
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(RecipeError, match=message):
        primus_core.load_recipe("primus", [override])


def test_unknown_recipe_suggests_and_cycles_are_caught(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="did you mean 'primus'"):
        primus_core.load_recipe("primuss")
    registry = tmp_path / "registry.yaml"
    registry.write_text(
        "recipes:\n  a: {extends: b, encoder: {type: stacked-rnn}}\n  b: {extends: a}\n"
    )
    monkeypatch.setenv("PRIMUS_REGISTRY", str(registry))
    with pytest.raises(RecipeError, match="extends itself: a -> b -> a"):
        primus_core.load_recipe("a")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("encoder: {type: stacked-rnn}\ntrain: [\n")
    with pytest.raises(RecipeError, match=r"broken.yaml: line \d+ invalid YAML"):
        primus_core.load_recipe(path)


def test_missing_components_are_reported_with_their_kind(tmp_path):
    path = tmp_path / "future.yaml"
    path.write_text("encoder: {type: stacked-rnn, hidden_size: 0}\nlosses: [{type: not-a-loss}]\n")
    problems = check_recipe(primus_core.load_recipe(path))
    assert any("losses.0: missing loss 'not-a-loss'" in p for p in problems)
    assert any("encoder.hidden_size: Input should be greater than 0" in p for p in problems)


def test_recipe_hash_changes_with_overrides():
    a = resolve_recipe("primus").hash
    assert a == resolve_recipe("primus").hash
    assert a != resolve_recipe("primus", ["train.seed=1"]).hash


def test_recipes_cli(cli, tmp_path):
    rows = json.loads(cli("recipes", "list", "--json").out)
    assert PAPER_RECIPES <= {r["name"] for r in rows}
    shown = json.loads(
        cli(
            "recipes",
            "show",
            "simclr",
            "--set",
            "train.epochs=2",
            "--json",
            expect=_ready_code("simclr"),
        ).out
    )
    assert shown["recipe"]["train"]["epochs"] == 2 and len(shown["hash"]) == 16
    path = tmp_path / "future.yaml"
    path.write_text("encoder: {type: stacked-rnn}\nlosses: [{type: not-a-loss}]\n")
    result = cli("recipes", "show", path, expect=1)
    assert "missing loss 'not-a-loss'" in result.err and result.err.count("\n") == 1
    assert "stacked-rnn" in result.out  # the resolved recipe is still shown
    result = cli("recipes", "show", "nope", expect=1)
    assert result.err.startswith("error: unknown recipe 'nope'")


def _ready_code(name: str) -> int:
    return 0 if not check_recipe(primus_core.load_recipe(name)) else 1


def test_paper_recipes_default_to_the_references_behaviour():
    from primus_core.components import validate_params

    for name in PAPER_RECIPES:
        recipe = primus_core.load_recipe(name)
        t = recipe.train
        assert (t.batch_size, t.batch_size_per, t.gather_negatives) == (16, "device", False)
        assert (t.amp, t.tf32, t.temperatures) == (False, False, "shared")
        assert [a.type for a in recipe.augmentations] in ([], ["scale-per-timestep", "permute"])
        for ref in recipe.losses:
            if ref.type in ("ss", "mm", "nn"):
                config = validate_params("loss", ref.type, ref.params)
                assert config.masked_rows == "negatives" and config.temperature_param == "tau"
                assert config.min_temperature is None
        assert [(r.type, r.params.get("splits")) for r in recipe.data.pretrain] == [
            ("egoexo4d", ["train"])
        ]
        assert [(r.type, r.params.get("splits")) for r in recipe.data.validation] == [
            ("egoexo4d", ["val"])
        ]


def test_primus_plus_turns_every_primus_switch_on():
    from primus_core.components import validate_params

    recipe = primus_core.load_recipe("primus-plus")
    assert check_recipe(recipe) == []
    t = recipe.train
    assert (t.batch_size_per, t.gather_negatives, t.amp, t.tf32) == ("global", True, True, True)
    assert t.temperatures == "per-loss"
    assert recipe.augmentations[0].type == "scale-per-channel"
    for ref in recipe.losses:
        config = validate_params("loss", ref.type, ref.params)
        assert (config.masked_rows, config.temperature_param) == ("removed", "log_tau")
        assert config.min_temperature == pytest.approx(0.01)
    # the offline recipes validate on held-out HAPT subjects, not on EgoExo4D
    assert primus_core.load_recipe("primus-hapt").data.validation is None


def test_validation_entry_takes_the_pretraining_download_location():
    """One `--set data.pretrain.egoexo4d.root=...` points the official val split at the same
    download; a validation entry that sets its own root keeps it."""
    recipe = primus_core.load_recipe(
        "primus", ["data.pretrain.egoexo4d.root=/data/ee", "data.pretrain.egoexo4d.imu_dir=/imu"]
    )
    (val,) = recipe.data.validation
    assert val.params["root"] == "/data/ee" and val.params["imu_dir"] == "/imu"
    assert val.params["splits"] == ["val"]
    own = primus_core.load_recipe(
        "primus", ["data.pretrain.egoexo4d.root=/data/ee", "data.validation.egoexo4d.root=/v"]
    )
    assert own.data.validation[0].params["root"] == "/v"


# docs/fidelity.md, "Corpus (EgoExo4D)": the values written out from the doc's table
REFERENCE_CORPUS = {
    "annotators": "first",
    "include_rejected": True,
    "cleaning": "reference",
    "windowing": "reference",
    "bad_windows": "reference",
}
PRIMUS_CORPUS = {
    "annotators": "all",
    "include_rejected": False,
    "cleaning": "primus",
    "windowing": "centred",
    "bad_windows": "reference",
}


@pytest.mark.parametrize(
    "name, corpus",
    [(n, REFERENCE_CORPUS) for n in sorted(PAPER_RECIPES)] + [("primus-plus", PRIMUS_CORPUS)],
)
def test_egoexo4d_corpus_values_of_the_paper_recipes_and_primus_plus(name, corpus):
    """Both EgoExo4D entries (pretraining `splits: [train]`, validation `splits: [val]`) of
    every paper recipe carry the reference's corpus values, and primus-plus the project's, as
    the adapter sees them once validated."""
    from primus_core.components import validate_params

    recipe = resolve_recipe(name).recipe
    entries = [("train", r) for r in recipe.data.pretrain]
    entries += [("val", r) for r in recipe.data.validation]
    assert [(split, r.type) for split, r in entries] == [("train", "egoexo4d"), ("val", "egoexo4d")]
    for split, ref in entries:
        config = validate_params("dataset", "egoexo4d", ref.params)
        got = {key: getattr(config, key) for key in corpus}
        got["bad_windows"] = str(got["bad_windows"])
        assert got == corpus, (name, split)
        assert list(config.splits) == [split]


def _problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return check_recipe(primus_core.load_recipe(path))


NN_ONLY = "losses: [{type: nn, ssl_coeff: 0.5, queue_size: 16, modalities: [text]}]\n"


def test_nn_needs_the_mmcl_and_ssl_heads_and_supervised_its_head(tmp_path, cli):
    """`nn` needs both `mmcl` and `ssl`; `supervised` needs its `head` (default `emb`, which
    every encoder has); the problem names the loss, the missing heads and the fields to set."""
    base = "extends: primus-hapt\n" + NN_ONLY
    assert _problems(tmp_path, base) == []
    # no ssl head (mmcl is set from the teacher): ssl is missing
    assert _problems(tmp_path, base + "encoder: {type: stacked-rnn, ssl_dim: 0}\n") == [
        "losses.0: loss 'nn' needs the encoder head(s) ssl; encoder 'stacked-rnn' has emb, mmcl "
        "(set ssl_dim > 0)"
    ]
    # both heads off (mmcl_dim set explicitly to 0 is kept): both are missing
    both_off = base + "encoder: {type: stacked-rnn, ssl_dim: 0, mmcl_dim: 0}\n"
    assert _problems(tmp_path, both_off) == [
        "losses.0: loss 'nn' needs the encoder head(s) mmcl, ssl; encoder 'stacked-rnn' has emb "
        "(set mmcl_dim, ssl_dim > 0)"
    ]
    no_heads = "extends: supervised-hapt\nencoder: {type: stacked-rnn, ssl_dim: 0, mmcl_dim: 0}\n"
    assert _problems(tmp_path, no_heads) == []  # the default head `emb` is always there
    ssl_head = no_heads + "losses: [{type: supervised, num_classes: 12, head: ssl}]\n"
    assert _problems(tmp_path, ssl_head) == [
        "losses.0: loss 'supervised' needs the encoder head(s) ssl; encoder 'stacked-rnn' has "
        "emb (set ssl_dim > 0)"
    ]
    (tmp_path / "r.yaml").write_text(ssl_head)
    result = cli("recipes", "show", tmp_path / "r.yaml", expect=1)
    assert result.err.strip().splitlines() == [
        "error: recipe 'r' cannot be built: losses.0: loss 'supervised' needs the encoder head(s) "
        "ssl; encoder 'stacked-rnn' has emb (set ssl_dim > 0)"
    ]


@pytest.fixture
def half_declared_encoder():
    """A plugin whose encoder config declares `channels` but neither `rate_hz` nor
    `window_samples`, and one that declares all three."""
    from pydantic import BaseModel, ConfigDict

    class ChannelsOnly(BaseModel):
        model_config = ConfigDict(extra="forbid")
        channels: list[str] = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
        ssl_dim: int = 8
        mmcl_dim: int = 8

    class Declared(ChannelsOnly):
        rate_hz: float = 50.0
        window_samples: int = 250

    def register_encoders(register):
        register("channels-only", "declared_test_plugin:Nothing", config=ChannelsOnly)
        register("declared", "declared_test_plugin:Nothing", config=Declared)

    with plugin_in_process("declared", register_encoders=register_encoders):
        yield


def test_the_encoder_config_must_declare_rate_hz_and_window_samples(
    tmp_path, half_declared_encoder
):
    problems = _problems(tmp_path, "extends: simclr-hapt\nencoder: {type: channels-only}\n")
    assert problems == [
        f"encoder: 'channels-only' must declare '{name}' in its config (the encoder contract)"
        for name in ("rate_hz", "window_samples")
    ]
    assert _problems(tmp_path, "extends: simclr-hapt\nencoder: {type: declared}\n") == []


def test_the_ready_column_is_false_for_a_recipe_that_fails_its_checks(tmp_path, monkeypatch, cli):
    registry = tmp_path / "overlay.yaml"
    registry.write_text(
        "recipes:\n"
        "  no-ssl-head: {extends: simclr-hapt, encoder: {type: stacked-rnn, ssl_dim: 0}}\n"
        "  fine: {extends: simclr-hapt}\n"
    )
    monkeypatch.setenv("PRIMUS_REGISTRY", str(registry))
    rows = {r["name"]: r for r in json.loads(cli("recipes", "list", "--json").out)}
    assert rows["no-ssl-head"]["ready"] is False
    assert rows["no-ssl-head"]["problems"] == [
        "losses.0: loss 'ss' needs the encoder head(s) ssl; encoder 'stacked-rnn' has emb, mmcl "
        "(set ssl_dim > 0)"
    ]
    assert rows["fine"]["ready"] is True and rows["fine"]["problems"] == []
    table = {
        line.split()[0]: line.split()[3] for line in cli("recipes", "list").out.splitlines()[1:]
    }
    assert table["no-ssl-head"] == "no" and table["fine"] == "yes"
