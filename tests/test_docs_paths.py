"""Committed reports and pages name no folder of the machine they were written on: paths are relative
to the repository, or placeholders (``$WORK``, ``$DUPMAE_SHARED_DATA``), or registry names (``default``),
as :func:`dupmae_ir.provenance.portable_path` spells them."""
from __future__ import annotations

import re

import pytest
from conftest import ROOT

# an absolute path: "/" then at least one folder, not inside a URL, a relative path or a placeholder
ABSOLUTE = re.compile(r"(?<![\w.~$}/:<>\-])/(?:[\w.+\-<>]+/)+[\w.+\-]*")
# generic locations, not this machine's: the kernel's files, the doc placeholder, Debian's JDK folder
ALLOWED = ("/proc/", "/path/to/", "/usr/lib/jvm/")
PAGES = sorted([*ROOT.glob("eval/*.md"), *ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "CHANGELOG.md"])


def machine_paths(text: str) -> list[str]:
    found = [m.group() for m in ABSOLUTE.finditer(text) if not m.group().startswith(ALLOWED)]
    return found + re.findall(r"\S*(?:site|dist)-packages\S*", text)


def test_the_check_finds_what_it_must():
    assert machine_paths("`python x.py --index /tmp/cl/idx --report eval/a.md`") == ["/tmp/cl/idx"]
    venv = "/opt/venv/lib/python3.11/site-packages/m/model"
    assert machine_paths(f"encoder `{venv}`")[0] == venv
    assert machine_paths("see https://host/a/b, ../eval/x.md, $WORK/a/b, eval/<suite>/<encoder>/, /proc/1/status") == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_absolute_machine_path(page):
    lines = [f"{page.relative_to(ROOT)}:{i}: {p}" for i, line in enumerate(page.read_text().splitlines(), 1)
             for p in machine_paths(line)]
    assert lines == []
