"""Provenance records the command a user can retype, and writes are atomic."""
import sys
from pathlib import Path

import dupmae_ir
from dupmae_ir.provenance import atomic_write_text, command_line, portable_path

PKG = Path(dupmae_ir.__file__).resolve().parent
ROOT = PKG.parent


def test_module_run_is_recorded_as_python_dash_m():
    cmd = command_line([str(PKG / "eval.py"), "beir", "--data-dir", "../data dir"])
    assert cmd.split()[1:4] == ["-m", "dupmae_ir.eval", "beir"]
    assert cmd.endswith("'../data dir'")  # shell-quoted


def test_script_outside_the_package_is_kept_as_a_script(tmp_path):
    script = str(tmp_path / "bench.py")
    assert command_line([script, "--x"]).split()[1:] == [portable_path(script), "--x"]


def test_paths_are_spelt_without_this_machines_folders(tmp_path, monkeypatch):
    """Paths in the repository become relative, the shared data folder and work folders outside it named
    placeholders (left for the shell to expand), the default backbone's installed folder its name."""
    from dupmae_ir.modeling.backbone import resolve_model_path

    monkeypatch.setenv("DUPMAE_SHARED_DATA", str(tmp_path / "shared"))
    cmd = command_line([str(ROOT / "bench" / "latency.py"), "--report", str(ROOT / "eval" / "x.md"),
                        "--topics", str(tmp_path / "shared" / "beir" / "scifact"),
                        "--model", f"m1={tmp_path / 'work dir' / 'ckpt'}", "--encoder", resolve_model_path("default"),
                        f"--index={tmp_path / 'idx'}", "--label", "a label", "indexes/rel"])
    work = portable_path(tmp_path)
    assert work.startswith("$WORK/")
    assert cmd == (f"python bench/latency.py --report eval/x.md --topics $DUPMAE_SHARED_DATA/beir/scifact "
                   f"--model m1=$WORK'{work[len('$WORK'):]}/work dir/ckpt' --encoder default --index={work}/idx "
                   "--label 'a label' indexes/rel").replace("python", Path(sys.executable).name, 1)
    assert portable_path("/") == "$WORK" and portable_path(ROOT) == "."


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "x.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left behind
