"""One convention for every command: -o/--output where it writes, usage errors exit 2,
--version, grouped help, global -v/-q before or after the command, completion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from sentiment import cli

ROOT = typer.main.get_command(cli.app)


def commands(group=ROOT, path=()) -> list[tuple[tuple[str, ...], object]]:
    found = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


COMMANDS = commands()
NAMES = [" ".join(p) for p, _ in COMMANDS]


def test_every_command_is_covered():
    assert {"prepare", "embeddings", "train", "evaluate", "ensemble", "score"} <= set(NAMES)
    assert {"jobs list", "jobs status", "jobs logs", "jobs stop"} <= set(NAMES)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=NAMES)
def test_each_command_has_help_and_refuses_unknown_options_with_exit_2(path):
    runner = CliRunner()
    app = cli.app
    helped = runner.invoke(app, [*path, "--help"])
    assert helped.exit_code == 0 and "Usage:" in helped.output
    wrong = runner.invoke(app, [*path, "--no-such-option"])
    assert wrong.exit_code == 2 and "No such option" in wrong.output


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=NAMES)
def test_every_output_option_is_dash_o(path, command):
    for param in command.params:
        if param.name in ("output", "root__output") or "--output" in param.opts:
            assert set(param.opts) >= {"-o", "--output"}, (path, param.opts)


def test_commands_that_write_take_dash_o():
    writes = {"prepare", "embeddings", "evaluate", "ensemble", "score"}
    for path, command in COMMANDS:
        if " ".join(path) in writes:
            assert any("-o" in p.opts for p in command.params), path


@pytest.mark.parametrize("name", ["train", "score"])
def test_run_commands_group_their_options_in_panels(name):
    command = dict(zip(NAMES, (c for _, c in COMMANDS), strict=True))[name]
    panels = {
        p.name: getattr(p, "rich_help_panel", None)
        for p in command.params
        if p.name != "help" and getattr(p, "param_type_name", "") != "argument"
    }
    assert all(panels.values()), [n for n, v in panels.items() if not v]
    assert panels["address"] == panels["config"] == "Where it runs"
    assert len(set(panels.values())) >= 4


@pytest.mark.parametrize(
    ("args", "missing"),
    [(["train"], "--data"), (["score"], "INPUTS"), (["train", "-q"], "--data"),
     (["score", "-v"], "INPUTS")],
    ids=["train", "score", "train-quiet-after", "score-verbose-after"],
)  # fmt: skip
def test_a_missing_required_input_is_a_usage_error_exit_2(args, missing, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(args)
    assert exited.value.code == 2
    assert missing in capsys.readouterr().err


def test_required_options_are_marked_in_help():
    runner = CliRunner()
    app = cli.app
    for args in (["train", "--help"], ["score", "--help"]):
        text = " ".join(runner.invoke(app, args, env={"COLUMNS": "200"}).output.split())
        assert "Required:" in text, args


def test_global_flags_go_before_or_after_the_command(tmp_path):
    """The installed command: -v/-q anywhere before `--`; after it they are arguments."""
    exe = str(Path(sys.executable).parent / "sentiment-jobs")
    for args in (["-q", "jobs", "list"], ["jobs", "list", "-q"], ["jobs", "-v", "list"]):
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip() == (
            "error: no Ray cluster given: use --address or set RAY_ADDRESS"
        ), (args, done.stderr)
    both = subprocess.run([exe, "jobs", "list", "-v", "-q"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert both.returncode == 2


def test_version_and_completion():
    from importlib.metadata import version

    exe = str(Path(sys.executable).parent / "sentiment-jobs")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == f"sentiment-jobs {version('sentiment-jobs')}\n"
    helped = CliRunner().invoke(cli.app, ["--help"])
    assert "--install-completion" in helped.output and "--show-completion" in helped.output


def test_jobs_commands_describe_their_own_address():
    for path, command in COMMANDS:
        if path[0] == "jobs":
            [address] = [p for p in command.params if p.name == "address"]
            assert "dashboard" in address.help and "submit as a Ray job" not in address.help
