"""``dupmae_ir.pyserini_hybrid`` patches Pyserini's private functions: the package pins the tested Pyserini range,
and the launcher refuses any other version with one line before it patches anything."""
from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from conftest import ROOT

from dupmae_ir.errors import UserError
from dupmae_ir.pyserini_hybrid import PYSERINI_TESTED, check_pyserini_version


def test_pyproject_pins_the_range_the_launcher_checks():
    pins = re.findall(r'^\s*"(pyserini[^"]*)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert pins == [f"pyserini{PYSERINI_TESTED}"]


def test_installed_pyserini_is_accepted():
    check_pyserini_version()
    check_pyserini_version(version("pyserini"))


@pytest.mark.parametrize("untested", ["1.5.2", "1.7.0", "2.0.0"])
def test_untested_pyserini_fails_with_one_line(untested):
    with pytest.raises(UserError) as e:
        check_pyserini_version(untested)
    line = str(e.value)
    assert "\n" not in line and f"pyserini {untested}" in line and f"pyserini{PYSERINI_TESTED}" in line
