"""bench/_harness.py, what every benchmark writes its eval/ report with: one percentile convention, tables
inserted where they belong, atomic writes, a header whose command names no folder of this machine."""
from __future__ import annotations

import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import _harness  # noqa: E402


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert [_harness.percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert _harness.percentile([3.0, 1.0, 2.0], 50) == 2.0 and _harness.percentile([5.0], 99) == 5.0
    assert _harness.percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0


def test_row_goes_after_the_table_and_prose_stays_after_it(tmp_path):
    head = ["| a | b |", "|---|---|"]
    path = tmp_path / "r.md"
    _harness.add_table_row(path, "| 1 | 2 |", head)
    assert path.read_text() == "| a | b |\n|---|---|\n| 1 | 2 |\n"
    path.write_text(path.read_text() + "\nProse under the table.\n")
    _harness.add_table_row(path, "| 3 | 4 |", head)
    assert path.read_text() == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\n\nProse under the table.\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]  # written by rename: no temporary left


def test_header_and_sections(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "latency.py"), "--report", str(tmp_path / "x.md")])
    head = _harness.header("Title", "What.")
    command = next(line for line in head.splitlines() if line.startswith("| **Command**"))
    assert "bench/latency.py --report $WORK/" in command and str(tmp_path) not in command
    assert all(f"| **{k}** |" in head for k in ("Date", "Machine", "Commit"))
    path = tmp_path / "x.md"
    _harness.append_section(path, head, "### one")
    _harness.append_section(path, head, "### two")
    text = path.read_text()
    assert text.startswith("# Title") and text.endswith("### one\n\n### two\n") and text.count("# Title") == 1
    assert _harness.markdown_table(["x", "y"], [(1, "a")]) == ["| x | y |", "|---|---|", "| 1 | a |"]


def test_timer_measures_the_block():
    import time

    with _harness.Timer() as t:
        time.sleep(0.01)
    assert 0.01 <= t.seconds < 5


def test_a_benchmark_work_folder_is_claimed_like_any_output(tmp_path):
    """A benchmark writes only into a new folder or one it made itself; a user's folder is refused untouched."""
    import pytest

    work = _harness.claim_work_dir(tmp_path / "work", "memory_plan")
    (work / "index.faiss").write_text("scratch")
    assert _harness.claim_work_dir(work, "memory_plan") == work  # its own folder, claimed again
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="did not write"):
        _harness.claim_work_dir(user, "memory_plan")
    assert [p.name for p in user.iterdir()] == ["notes.txt"] and (user / "notes.txt").read_text() == "keep"
    with pytest.raises(SystemExit):
        _harness.claim_work_dir(work, "mining_memory")  # another script's folder


def test_run_measured_gives_the_childs_own_peak_memory_and_output(tmp_path):
    import pytest

    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('held', flush=True)"
    big = bytearray(600 * 2**20)  # this process is large: a forked child's ru_maxrss would start at its size
    big[::4096] = b"x" * len(big[::4096])
    seconds, rss, out = _harness.run_measured([sys.executable, "-c", grow])
    assert out.strip() == "held" and seconds > 0
    idle = _harness.run_measured([sys.executable, "-c", "pass"])[1]  # an interpreter alone
    assert idle < 100 and 300 < rss < 400, (idle, rss)  # the child's own 300 MiB, not this process's 600
    del big
    log = tmp_path / "child.log"
    assert _harness.run_measured([sys.executable, "-c", "print('to the log')"], log=log)[2] == ""
    assert log.read_text() == "to the log\n"
    with pytest.raises(SystemExit, match="failed.*boom"):
        _harness.run_measured([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(SystemExit, match="cannot run no-such-program"):
        _harness.run_measured(["no-such-program"])
    raw = "import sys; sys.stdout.buffer.write(b'a\\xffb')"  # not UTF-8: replaced, not a crash
    assert _harness.run_measured([sys.executable, "-c", raw])[2] == "a\ufffdb"
