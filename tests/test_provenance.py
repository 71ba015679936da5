"""Provenance records the command a user can retype, and writes are atomic."""
from pathlib import Path

import dupmae_ir
from dupmae_ir.provenance import atomic_write_text, command_line

PKG = Path(dupmae_ir.__file__).resolve().parent


def test_module_run_is_recorded_as_python_dash_m():
    cmd = command_line([str(PKG / "eval.py"), "beir", "--data-dir", "../data dir"])
    assert cmd.split()[1:4] == ["-m", "dupmae_ir.eval", "beir"]
    assert cmd.endswith("'../data dir'")  # shell-quoted


def test_script_outside_the_package_is_kept_as_is(tmp_path):
    script = str(tmp_path / "bench.py")
    assert command_line([script, "--x"]).split()[1:] == [script, "--x"]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "x.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left behind
