"""dupmae_ir._child: a child reports its own peak memory, not the high-water mark of the large process that
forked it (getrusage's ru_maxrss carries that across fork and exec)."""
from __future__ import annotations

import resource
import subprocess

from dupmae_ir._child import child_command, read_peak_rss


def test_a_child_of_a_large_process_reports_its_own_peak():
    big = bytearray(600 * 2**20)  # this process holds 600 MiB when it starts the child
    big[::4096] = b"x" * len(big[::4096])
    small = subprocess.run(child_command("platform", peak_rss=True), capture_output=True, text=True, check=True)
    grown = subprocess.run(child_command("json.tool", peak_rss=True), input="[" + "1," * 5_000_000 + "1]",
                           capture_output=True, text=True, check=True)
    del big
    own, larger = read_peak_rss(small.stderr), read_peak_rss(grown.stderr)
    assert small.stdout.strip() and own < 100, own  # the interpreter alone
    assert larger > own + 40, (own, larger)  # a child that grows reads larger (~75 MiB)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 > 600  # what the kernel's figure says
    assert read_peak_rss(subprocess.run(child_command("platform"), capture_output=True, text=True).stderr) is None
