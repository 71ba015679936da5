"""The package's import structure: every import (module level or inside a function) goes to the same
layer or a lower one, no library module imports a command module, and there is no import cycle."""
from __future__ import annotations

import ast
from fnmatch import fnmatch
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "dupmae_ir"
# lowest first; a module may import its own layer and the layers below
LAYERS = [
    ["dupmae_ir", "dupmae_ir.numbers", "dupmae_ir.errors", "dupmae_ir.outputs", "dupmae_ir.provenance",
     "dupmae_ir.fingerprint", "dupmae_ir.java", "dupmae_ir._child"],
    ["dupmae_ir.data", "dupmae_ir.data.*"],
    ["dupmae_ir.runs", "dupmae_ir.precision", "dupmae_ir.modeling", "dupmae_ir.modeling.*"],
    ["dupmae_ir.inference", "dupmae_ir.index", "dupmae_ir.dense_index"],
    ["dupmae_ir.encode", "dupmae_ir.encode.corpus", "dupmae_ir.encode.build", "dupmae_ir.encode.queries",
     "dupmae_ir.encode.distributed",
     "dupmae_ir.search", "dupmae_ir.search.searcher", "dupmae_ir.search.lucene", "dupmae_ir.search.exact",
     "dupmae_ir.bm25",
     "dupmae_ir.pyserini_encoders", "dupmae_ir.explain", "dupmae_ir.explain.lucene", "dupmae_ir.api"],
    ["dupmae_ir.serve", "dupmae_ir.serve.app", "dupmae_ir.serve.documents"],
    ["dupmae_ir.train", "dupmae_ir.train.*"],
    ["dupmae_ir.eval", "dupmae_ir.eval.suites", "dupmae_ir.eval.report", "dupmae_ir.eval.significance",
     "dupmae_ir.eval.baselines"],
    ["dupmae_ir.recipe", "dupmae_ir.recipe.*", "dupmae_ir.adapt", "dupmae_ir.adapt.*"],
]
# command modules (`python -m dupmae_ir.X`): argument parsing and printing; nothing imports them but commands
COMMANDS = ["dupmae_ir.cli", "dupmae_ir.*.__main__", "dupmae_ir.pretrain", "dupmae_ir.finetune", "dupmae_ir.demo",
            "dupmae_ir.pyserini_hybrid", "dupmae_ir.pyserini_run"]


# the package's lazy front door: `dupmae_ir.Indexer` imports dupmae_ir.api inside the package's
# __getattr__, at first use, never while a module is being imported (test_front_door_import_is_lazy)
LAZY = {("dupmae_ir", "dupmae_ir.api")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``dupmae_ir`` module ``name`` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dupmae_ir"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "dupmae_ir":
                target = node.module
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known}
    return {m for m in found if m in known and m != name and (name, m) not in LAZY}


def layer(name: str) -> int:
    if any(fnmatch(name, pattern) for pattern in COMMANDS):
        return len(LAYERS)
    for i, patterns in enumerate(LAYERS):
        if any(fnmatch(name, pattern) for pattern in patterns):
            return i
    raise AssertionError(f"{name}: not placed in a layer of tests/test_layers.py")


def test_every_import_goes_down_the_layers():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
              for a, targets in graph.items() for b in targets if layer(b) > layer(a)]
    assert upward == []
    assert "dupmae_ir.encode.__main__" in graph and layer("dupmae_ir.search.__main__") == len(LAYERS)


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_over_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_front_door_import_is_lazy():
    """The one import that LAZY leaves out of the graph stands inside the package's ``__getattr__``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    getattr_ = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
    inside = [n for n in ast.walk(getattr_) if isinstance(n, ast.ImportFrom)]
    assert top == [] and [(n.level, n.module, [a.name for a in n.names]) for n in inside] == [(1, None, ["api"])]



# concepts that once had two or more homes (issue 33): every match of the pattern, outside comments,
# stands in the concept's one home
ONE_HOME = {
    "the BEIR sets whose query id is dropped from its hits": (r"DROP_QUERY_ID_DATASETS\s*=", "dupmae_ir.data.resolve"),
    "Lucene's clause limit": (r"(CLAUSES|query_topk)\b[^=\n]*=\s*(1024|1 << 16)|setMaxClauseCount", "dupmae_ir.java"),
    "the `auto` precision rule": (r"is_bf16_supported\(\)|cpu_has_fast_bf16\(\) else", "dupmae_ir.precision"),
    "the list of precision names": (r"\"fp32\", \"bf16\"", "dupmae_ir.precision"),
    "the atomic file write": (r"tmp\.replace\((path|Path\()|os\.replace\(tmp, path\)", "dupmae_ir.provenance"),
    "the empty-document policy": (r"stats\.empty \+= 1", "dupmae_ir.data.readers"),
    "query pruning by minimum weight": (r">= min_weight", "dupmae_ir.modeling.bow"),
    "the mining slack": (r"MINE_SLACK\s*=|mine_skip \+ \d", "dupmae_ir.train.mining"),
}
NOT_YET: set[tuple[str, str]] = set()  # (concept, module) still outside its home: none


def test_one_home_per_concept():
    import re

    found = {}
    for name, path in modules().items():
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for what, (pattern, _) in ONE_HOME.items():
            found.setdefault(what, []).extend(name for _ in re.finditer(pattern, code))
    assert all(found[what] for what in ONE_HOME), found
    stray = {what: sorted(set(names) - {home} - {m for w, m in NOT_YET if w == what})
             for what, names in found.items() for home in [ONE_HOME[what][1]]}
    assert {what: names for what, names in stray.items() if names} == {}
