"""Stock ``pyserini.search.hybrid`` with live DupMAE query encoding: ``python -m dupmae_ir.pyserini_hybrid <args>``.

The arguments are exactly those of ``python -m pyserini.search.hybrid`` (sub-commands ``dense``,
``sparse``, ``fusion``, ``run``). This launcher only

1. starts the JVM with a Java 21 (:func:`dupmae_ir.java.start_jvm`);
2. registers the DupMAE encoders with Pyserini's own tables:
   - dense: ``query_encoder_class_map["dupmae"]`` (and ``dupmae`` added to ``--encoder-class``'s
     choices), so ``dense --encoder CKPT --encoder-class dupmae`` builds
     :class:`dupmae_ir.pyserini_encoders.DupMAEQueryEncoder`;
   - impact: ``sparse --impact --encoder dupmae:CKPT`` (or a checkpoint folder holding
     ``dupmae_config.json``, or ``dupmae:default``) builds
     :class:`dupmae_ir.pyserini_encoders.DupMAEImpactQueryEncoder`; every other ``--encoder`` value
     keeps Pyserini's own meaning;
3. lifts Lucene's query limit (``LUCENE_MAX_CLAUSES`` terms) in this JVM (a DupMAE query keeps every positive
   vocabulary weight unless ``query_topk`` is set);
4. takes ``--ef-search N`` / ``--nprobe N`` out of the ``dense`` section (Pyserini's hybrid CLI parses
   ``--ef-search`` but never applies it, and has no ``--nprobe``) and sets them on the FAISS index of
   every ``FaissSearcher`` it opens (:func:`dupmae_ir.dense_index.apply_search_knobs`, as
   ``dupmae_ir.search`` does; HNSW and IVF indexes only, else a one-line error); without them the
   values stored in the index file apply (``encode`` writes 128 and 32);
5. runs Pyserini's module with ``runpy.run_module("pyserini.search.hybrid", run_name="__main__")``.

DupMAE's score (dense + de-quantised sparse) is ``fusion --alpha 1/(s_q*s_d)`` without
``--normalization``; with the default scales 100/100 that is ``--alpha 0.0001``. Example::

    python -m dupmae_ir.pyserini_hybrid \\
      dense  --index IDX/dense --encoder CKPT --encoder-class dupmae [--ef-search 256] \\
      sparse --index IDX/impact --impact --encoder dupmae:CKPT --min-idf -1 \\
      fusion --alpha 0.0001 --hits 1000 \\
      run    --topics queries.tsv --output runs/hybrid.trec --hits 1000 --batch-size 64 --threads 2
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

ENCODER_CLASS = "dupmae"
SECTIONS = ("dense", "sparse", "fusion", "run")  # the sub-commands of pyserini.search.hybrid
IMPACT_PREFIX = "dupmae:"
# register() replaces Pyserini's private functions, whose shape can change in any release: only the
# versions the tests ran on are accepted (pyproject.toml pins the same range)
PYSERINI_TESTED = ">=1.6.0,<1.7"


def check_pyserini_version(version: str | None = None) -> None:
    """Raise a one-line :class:`~dupmae_ir.errors.UserError` unless Pyserini ``version`` (default: the
    installed one) is in :data:`PYSERINI_TESTED`."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from packaging.specifiers import SpecifierSet

    from .errors import UserError

    fix = f"pip install 'pyserini{PYSERINI_TESTED}'"
    try:
        version = version or installed("pyserini")
    except PackageNotFoundError:
        raise UserError("pyserini", "not installed", fix) from None
    if version not in SpecifierSet(PYSERINI_TESTED):
        raise UserError(f"pyserini {version}", f"dupmae_ir.pyserini_hybrid patches Pyserini's private functions and is "
                        f"tested with pyserini{PYSERINI_TESTED} only", fix)


def _is_dupmae_checkpoint(name: str) -> bool:
    from .modeling.model import CONFIG_NAME

    return (Path(name) / CONFIG_NAME).is_file()


def dense_query_encoder(encoder_dir: str, tokenizer_name: str | None = None, device: str = "cpu",
                        prefix: str | None = None, fp16: bool = False, **pyserini_extras):
    """Factory with the keyword arguments Pyserini's ``init_query_encoder`` passes to a class from
    ``query_encoder_class_map``. ``pyserini_extras`` are options Pyserini adds when the *path*
    contains words such as 'sentence' or 'clip' (pooling, l2_norm...): DupMAE's pooling is fixed
    ([CLS]), so they are ignored on purpose."""
    from .pyserini_encoders import DupMAEQueryEncoder

    if prefix:
        raise ValueError("--query-prefix is not supported by the DupMAE query encoder.")
    return DupMAEQueryEncoder(encoder_dir, device=device)


def register() -> None:
    """Register the DupMAE encoders with Pyserini's CLI tables (idempotent). Checks Pyserini's version,
    then starts the JVM."""
    from .java import start_jvm

    check_pyserini_version()
    start_jvm()
    import pyserini.encode as pencode
    import pyserini.search.faiss.__main__ as faiss_main
    from pyserini.search.lucene import LuceneImpactSearcher

    from .java import raise_max_clause_count

    # DupMAE queries may hold thousands of terms (no query_topk): lift Lucene's clause limit
    raise_max_clause_count()
    pencode.query_encoder_class_map[ENCODER_CLASS] = dense_query_encoder
    faiss_main.query_encoder_class_map[ENCODER_CLASS] = dense_query_encoder  # same dict; explicit anyway

    if not getattr(faiss_main.define_dsearch_args, "_dupmae", False):
        original_define = faiss_main.define_dsearch_args

        def define_dsearch_args(parser):
            original_define(parser)
            for action in parser._actions:
                if "--encoder-class" in action.option_strings and ENCODER_CLASS not in action.choices:
                    action.choices = [*action.choices, ENCODER_CLASS]

        define_dsearch_args._dupmae = True
        faiss_main.define_dsearch_args = define_dsearch_args

    original_init = LuceneImpactSearcher._init_query_encoder_from_str
    if not getattr(original_init, "_dupmae", False):
        def init_query_encoder_from_str(query_encoder):
            if isinstance(query_encoder, str) and (query_encoder.startswith(IMPACT_PREFIX)
                                                    or _is_dupmae_checkpoint(query_encoder)):
                from .pyserini_encoders import DupMAEImpactQueryEncoder

                name = query_encoder[len(IMPACT_PREFIX):] if query_encoder.startswith(IMPACT_PREFIX) else query_encoder
                return DupMAEImpactQueryEncoder(name)
            return original_init(query_encoder)

        init_query_encoder_from_str._dupmae = True
        LuceneImpactSearcher._init_query_encoder_from_str = staticmethod(init_query_encoder_from_str)


def split_dense_knobs(argv: list[str]) -> tuple[list[str], int | None, int | None]:
    """``(argv without them, ef_search, nprobe)``: ``--ef-search`` / ``--nprobe`` taken out of the ``dense``
    section of a ``pyserini.search.hybrid`` command line (split into sections as Pyserini splits it)."""
    import argparse

    from .cli import CommandParser, add_dense_knob_args

    parser = CommandParser(prog="python -m dupmae_ir.pyserini_hybrid dense", add_help=False, allow_abbrev=False)
    add_dense_knob_args(parser)
    knobs, out, section = argparse.Namespace(ef_search=None, nprobe=None), [], []
    for token in [*argv, SECTIONS[0]]:  # a sentinel section closes the last one
        if token in SECTIONS:
            if section[:1] == ["dense"]:
                knobs, rest = parser.parse_known_args(section[1:], namespace=knobs)
                section = ["dense", *rest]
            out += section
            section = []
        section.append(token)
    return out, knobs.ef_search, knobs.nprobe


def set_dense_knobs(ef_search: int | None, nprobe: int | None) -> None:
    """Every ``FaissSearcher`` this process opens from now on searches with these knobs (its index
    gets them on load); ``None, None`` restores Pyserini's loader (the values stored in the file)."""
    from pyserini.search.faiss import FaissSearcher

    original = getattr(FaissSearcher.load_index, "_dupmae_original", FaissSearcher.load_index)
    if ef_search is None and nprobe is None:
        FaissSearcher.load_index = original
        return

    def load_index(self, index_dir: str):
        from .dense_index import apply_search_knobs

        index, docids = original(self, index_dir)
        self.dense_search = apply_search_knobs(index, ef_search, nprobe, Path(index_dir) / "index")
        return index, docids

    load_index._dupmae_original = original
    FaissSearcher.load_index = load_index


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") and len(argv) == 1:
        print(__doc__)
        print("Pyserini's own help follows.\n")
    argv, ef_search, nprobe = split_dense_knobs(argv)
    register()
    set_dense_knobs(ef_search, nprobe)
    sys.argv = ["pyserini.search.hybrid", *argv]
    runpy.run_module("pyserini.search.hybrid", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    from .errors import run_command

    sys.exit(run_command(main))
