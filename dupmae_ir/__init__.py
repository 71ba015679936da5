"""dupmae-ir: DupMAE (RetroMAE-2, ACL 2023) for Pyserini/Anserini.

Importing this package is cheap on purpose: torch, transformers, faiss and the JVM are imported by
the submodules that use them, never here. The front door for Python users, :class:`Indexer` and
:class:`Searcher` (:mod:`dupmae_ir.api`), is imported on first use of either name.
"""
__version__ = "0.1.0"
__all__ = ["Indexer", "Searcher", "__version__"]


def __getattr__(name: str):
    if name in ("Indexer", "Searcher"):
        from . import api  # on first use only: the facade pulls in the encoder and the searchers

        return getattr(api, name)
    raise AttributeError(f"module 'dupmae_ir' has no attribute {name!r}")
