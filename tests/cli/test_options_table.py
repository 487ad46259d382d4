"""The CLI against the options table (edgeood.config.TABLE): every option of every command is
a row of the table for that command (same Python name, flag, aliases and default), every row
of a command is an option of it, and every command takes --json and --quiet."""
from __future__ import annotations

from dataclasses import fields

import pytest
import typer.main

from edgeood.cli.app import app
from edgeood.config import COMMANDS, CONFIGS, REQUIRED, TABLE, options_for


def _commands() -> dict:
    """'export', ..., 'deploy triton': every leaf command of the typer app."""
    found = {}

    def walk(cmd, prefix: str):
        if hasattr(cmd, "commands"):  # a group (typer may carry its own click)
            for name, sub in cmd.commands.items():
                walk(sub, f"{prefix} {name}".strip())
        else:
            found[prefix] = cmd
    walk(typer.main.get_command(app), "")
    return found


def _options(cmd) -> dict:
    return {p.name: p for p in cmd.params if p.param_type_name == "option"}


def test_the_table_names_every_command_of_the_app():
    assert set(_commands()) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_its_table_row(command):
    cmd = _commands()[command]
    rows = {n: o for n, o in options_for(command).items() if o.flag is not None}
    params = _options(cmd)
    assert set(params) == set(rows), (command, set(params) ^ set(rows))
    for name, p in params.items():
        row = rows[name]
        assert p.opts[0] == row.flag, (command, name)
        assert sorted(p.opts[1:]) == sorted(row.aliases), (command, name)
        if row.negatable:
            assert p.secondary_opts == [f"--no-{row.flag[2:]}"]
        if row.default is REQUIRED:
            assert p.required, (command, name)
        else:
            assert not p.required and p.default == row.default, (command, name, p.default)
        assert (p.help or "") == row.help
        if row.type is bool:
            assert p.is_flag, (command, name)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_json_and_quiet(command):
    opts = {o for p in _commands()[command].params for o in p.opts}
    assert {"--json", "--quiet", "-q"} <= opts, command


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_flags_show_no_value_in_help(command):
    """Flags (and --help) take no value: --help shows no <bool> beside them."""
    from typer.testing import CliRunner
    res = CliRunner().invoke(app, [*command.split(), "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--help" in res.output
    assert "<bool>" not in res.output, res.output


def test_config_fields_are_the_python_rows_of_their_command():
    for cls in CONFIGS:
        python_rows = {n for n, o in options_for(cls.command).items() if o.python}
        assert {f.name for f in fields(cls)} - {"caller"} == python_rows, cls.__name__


def test_one_row_per_name_and_command():
    for command in COMMANDS:
        names = [o.name for o in TABLE if command in o.commands]
        assert len(names) == len(set(names)), command
