"""The front door `python -m mhpo_verl <command>`."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from mhpo_verl.__main__ import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_has_a_main(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.main)


def test_unknown_command_is_named_and_exits_2():
    result = subprocess.run([sys.executable, "-m", "mhpo_verl", "trian"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "unknown command 'trian'" in result.stderr and "train" in result.stderr
