"""Ctrl-C in any command: one line and exit status 130, the traceback only with --debug."""
from __future__ import annotations

import pytest

from dupmae_ir.errors import run_command


def _interrupted(argv):
    raise KeyboardInterrupt


def test_ctrl_c_is_one_line_and_status_130(capsys, monkeypatch):
    monkeypatch.delenv("DUPMAE_DEBUG", raising=False)
    assert run_command(_interrupted, []) == 130
    err = capsys.readouterr().err
    assert err == "interrupted (Ctrl-C); add --debug for the traceback\n"
    with pytest.raises(KeyboardInterrupt):
        run_command(_interrupted, ["--debug"])
