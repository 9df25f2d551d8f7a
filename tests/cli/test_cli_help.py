"""`mvi-tf --help` and every command's --help explain every option."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mvi_tf.cli import main


def test_group_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in main.commands:
        assert name in result.output


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_option_has_help(name):
    command = main.commands[name]
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            assert param.help, f"mvi-tf {name} {param.opts} has no help text"
