"""Every command with bad values of every option ends in one ``error:`` line and a non-zero exit
(issue 13, item 6). The command tree is walked, so an option added later is covered too: one with
a checking type gets bad values made from that type; one whose value can only be checked when it
is used (free text) must be listed in FREE_TEXT with bad values, or this test fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import click
import numpy as np
import pytest

from primus_core.cli.main import add_command_groups
from primus_core.cli.main import cli as root
from primus_core.cli.params import (
    ComponentName,
    Device,
    Fraction,
    OutputDir,
    OutputFile,
    PositiveFloat,
)

# (command, option) -> bad values to try; None: checked when used, too costly to start here
FREE_TEXT: dict[tuple[str, str], list[str] | None] = {
    ("data prepare", "--root"): ["/no/such/folder"],
    ("data prepare", "--set"): ["no-equals-sign", "nope=1"],
    ("data info", "--root"): ["/no/such/folder"],
    ("data info", "--set"): ["no-equals-sign"],
    ("embed", "--key"): ["nope"],
    ("eval", "--dataset"): ["nope"],
    ("eval", "--set"): ["no-equals-sign"],
    ("eval", "--shots"): ["-1", "x", "0"],
    ("train", "--set"): ["train.seed=-1", "no-equals-sign", "train.lr=nan"],
    ("recipes show", "--set"): ["train.seed=-1"],
    ("zoo pull", "--revision"): ["nope"],
    ("zoo push", "--repo-id"): ["../x", "bad id"],
    ("zoo push", "--revision"): None,
    ("zoo push", "--name"): None,
    ("zoo push", "--licence"): None,  # any text: it is only printed in the snippet
    ("cache build", "--set"): ["no-equals-sign"],
    **{
        (f"experiment {name}", option): None
        for name in ("benchmark", "diversity-vs-size")
        for option in (
            "--set",
            "--shots",
            "--recipes",
            "--eval-datasets",
            "--in-domain",
            "--source",
            "--recipe",
            "--diversities",
            "--sizes",
        )
    },
}


def commands():
    add_command_groups()

    def walk(group, path):
        for name, command in sorted(group.commands.items()):
            if isinstance(command, click.Group):
                yield from walk(command, (*path, name))
            else:
                yield " ".join((*path, name)), command

    return list(walk(root, ()))


def valued_options(command: click.Command):
    for param in command.params:
        if isinstance(param, click.Option) and not (param.is_flag or param.count):
            yield param


def bad_values(param: click.Parameter, tmp_path) -> list[str] | None:
    """Bad values made from the option's type; None when the type checks nothing."""
    kind = param.type
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    if isinstance(kind, click.IntRange) and kind.min is not None:
        return [str(kind.min - 1), "x", "1.5"]
    if isinstance(kind, PositiveFloat):
        return ["0", "-1", "nan", "inf", "x"]
    if isinstance(kind, Fraction):
        return ["0", "1", "nan", "x"]
    if isinstance(kind, click.Choice):
        return ["nope"]
    if isinstance(kind, Device):
        return ["tpu", "cuda:99"]
    if isinstance(kind, ComponentName):
        return ["nope"]
    if isinstance(kind, OutputFile):
        return [str(tmp_path), str(a_file / "x.npy")]
    if isinstance(kind, OutputDir):
        return [str(a_file), str(a_file / "sub")]
    if isinstance(kind, click.Path) and kind.exists:
        return [str(tmp_path / "missing")]
    return None


def arguments_for(command: click.Command, tmp_path) -> list[str]:
    args = []
    for param in command.params:
        if isinstance(param, click.Argument):
            exists = isinstance(param.type, click.Path) and param.type.exists
            args.append(str(tmp_path) if exists else "x")
    return args


def test_every_option_is_covered(tmp_path):
    """A new option needs a checking type (primus_core/cli_params.py) or a FREE_TEXT entry."""
    uncovered = [
        f"{name} {param.opts[-1]} ({type(param.type).__name__})"
        for name, command in commands()
        for param in valued_options(command)
        if bad_values(param, tmp_path) is None and (name, param.opts[0]) not in FREE_TEXT
    ]
    assert not uncovered, "options with unchecked values: " + ", ".join(uncovered)


def assert_one_error_line(result, *fragments: str) -> None:
    lines = result.err.strip().splitlines()
    assert "Traceback" not in result.err, result.err
    assert lines and lines[-1].startswith("error: "), result.err
    assert sum(line.startswith("error:") for line in lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_bad_values_of_typed_options_are_refused_before_any_work(cli, tmp_path):
    tried = 0
    for name, command in commands():
        for param in valued_options(command):
            for value in bad_values(param, tmp_path) or []:
                args = [*name.split(), *arguments_for(command, tmp_path), param.opts[0], value]
                assert_one_error_line(cli(*args, expect=2), param.opts[0])
                tried += 1
    assert tried > 100


@pytest.mark.parametrize(
    "key", [k for k, v in FREE_TEXT.items() if v is not None], ids=lambda k: " ".join(k)
)
def test_bad_free_text_values_are_one_error_line(capsys, tmp_path, key):
    from conftest import CliResult
    from primus_core.cli.main import main

    name, option = key
    command = dict(commands())[name]
    for value in FREE_TEXT[key]:
        args = [*name.split(), *arguments_for(command, tmp_path), option, value]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        result = CliResult(exit_info.value.code, *capsys.readouterr())
        assert result.code in (1, 2), result
        assert_one_error_line(result)


# ---------------------------------------------------------------- the list in items 6 and 7
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import primus_core
    from primus_core.zoo.modeldir import save_model_dir

    encoder = primus_core.create("encoder", "stacked-rnn", hidden_size=16, conv_channels=8)
    path = tmp_path_factory.mktemp("m") / "model"
    save_model_dir(
        encoder,
        path,
        encoder_type="stacked-rnn",
        encoder_params={"hidden_size": 16, "conv_channels": 8},
    )
    return path


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["data", "prepare", "hapt", "--rate-hz", "-5"], "--rate-hz"),
        (["data", "prepare", "hapt", "--rate-hz", "0"], "--rate-hz"),
        (["data", "prepare", "hapt", "--window-samples", "0"], "--window-samples"),
        (["data", "prepare", "hapt", "--cache-dir", "{file}"], "--cache-dir"),
        (["data", "list", "--cache-dir", "{file}"], "--cache-dir"),
        (["eval", "{model}", "--dataset", "hapt", "--lr", "nan"], "--lr"),
        (["eval", "{model}", "--dataset", "hapt", "--teacher", "nope"], "unknown teacher 'nope'"),
        (["eval", "{model}", "--dataset", "hapt", "--out", "{file}"], "--out"),
        (["eval", "{model}", "--dataset", "hapt", "--device", "cuda:7"], "--device"),
        (["train", "primus-hapt", "--out", "{file}"], "--out"),
        (["train", "primus-hapt", "--device", "nope"], "--device"),
        (["embed", "{model}", "{npy}", "--out", "{dir}"], "--out"),
        (["cache", "build", "primus-hapt", "--root", "{file}"], "--root"),
    ],
)
def test_issue_list_items_6_and_7(cli, tmp_path, tiny_model, args, fragment):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    np.save(tmp_path / "x.npy", np.zeros((1, 6, 250), np.float32))
    values = {"file": a_file, "model": tiny_model, "npy": tmp_path / "x.npy", "dir": tmp_path}
    args = [a.format(**values) for a in args]
    assert_one_error_line(cli(*args, expect=2), fragment)


def test_unexpected_errors_are_one_line_too(cli, monkeypatch, tmp_path):
    """A bug or a file-system failure anywhere still ends in one error line (traceback with -v)."""

    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("primus_core.zoo.hub.zoo_entries", boom)
    assert_one_error_line(cli("zoo", "list", expect=1), "ZeroDivisionError", "-v")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr("primus_core.zoo.hub.zoo_entries", disk_full)
    assert_one_error_line(cli("zoo", "list", expect=1), "No space left on device")


def primus_with_zoo_entries(body: str, *args: str) -> subprocess.CompletedProcess:
    """``primus ARGS`` in a fresh interpreter (its own logging and signal handlers) whose
    ``zoo_entries`` runs ``body`` (code with ``os``, ``signal`` and ``time`` imported)."""
    script = "\n".join(
        [
            "import os, signal, sys, time",
            "import primus_core.zoo.hub as hub",
            "def zoo_entries(*args, **kwargs):",
            textwrap.indent(body, "    "),
            "hub.zoo_entries = zoo_entries",
            "from primus_core.cli.main import main",
            "main(sys.argv[1:])",
        ]
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )


def test_ctrl_c_in_a_command_exits_130_with_one_line():
    """A real SIGINT while a command works ends it with exit 130 and one stderr line."""
    proc = primus_with_zoo_entries(
        "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)", "zoo", "list"
    )
    assert proc.returncode == 130, proc.stderr
    # click turns Ctrl-C inside a command into "aborted"; outside one primus says "interrupted"
    assert proc.stderr.split() in (["aborted"], ["interrupted"])
    assert proc.stdout == ""


def test_verbose_logs_the_traceback_of_an_unexpected_error():
    """``-v`` puts the traceback on stderr (down to the raising line); without it, one line."""
    body = "raise ZeroDivisionError('division by zero')"
    quiet = primus_with_zoo_entries(body, "zoo", "list")
    assert quiet.returncode == 1 and len(quiet.stderr.strip().splitlines()) == 1
    assert "Traceback" not in quiet.stderr
    loud = primus_with_zoo_entries(body, "-v", "zoo", "list")
    assert loud.returncode == 1
    assert "Traceback (most recent call last)" in loud.stderr
    assert "in zoo_entries" in loud.stderr and "ZeroDivisionError: division by zero" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("error: unexpected ZeroDivisionError")
