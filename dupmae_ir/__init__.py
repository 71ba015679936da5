"""dupmae-ir: DupMAE (RetroMAE-2, ACL 2023) for Pyserini/Anserini.

Importing this package is cheap on purpose: torch, transformers, faiss and the JVM are imported by
the submodules that use them, never here.
"""
__version__ = "0.1.0"
