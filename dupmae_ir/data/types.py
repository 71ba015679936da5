"""Plain data types of the data layer."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError  # noqa: F401  (re-exported: the data layer's error)


@dataclass(frozen=True)
class Doc:
    """One corpus document; ``title`` is ``""`` for collections without titles (MS MARCO passages)."""

    id: str
    title: str
    text: str


def doc_text(doc: Doc) -> str:
    """The one way a document's title and text are joined for encoding: ``"title text"``."""
    if doc.title:
        return f"{doc.title} {doc.text}" if doc.text else doc.title
    return doc.text
