"""Document text for the server: the corpus held in memory, snippets and highlighted words."""
from __future__ import annotations

from typing import Iterable, Sequence

from ..errors import UserError

SNIPPET_CHARS = 300
Span = tuple[int, int, list[str]]  # (start, end, terms) in a string


def load_documents(corpus, data_dir=None, keep: Iterable[str] | None = None) -> dict[str, tuple[str, str]]:
    """``{docid: (title, text)}`` of a collection (only the ids in ``keep`` when given), read once."""
    from ..data import resolve

    keep = set(keep) if keep is not None else None
    docs = {}
    for doc in resolve(corpus, data_dir=data_dir).iter_docs(check_duplicates=False):
        if keep is None or doc.id in keep:
            docs[doc.id] = (doc.title, doc.text)
    if keep is not None and keep and not docs:
        raise UserError(f"corpus {corpus}", "holds none of the index's documents",
                        "pass --corpus with the collection the index was built from")
    return docs


def joined(title: str, text: str) -> tuple[str, int]:
    """``dupmae_ir.data.doc_text``'s ``"title text"`` and where ``text`` starts in it."""
    from ..data import Doc, doc_text

    full = doc_text(Doc("", title, text))
    return full, (len(title) + 1 if title and text else 0 if not title else len(full))


def word_spans(text: str, matches: Iterable[tuple[int, int, str]], lo: int = 0, hi: int | None = None) -> list[Span]:
    """Matches (piece offsets) inside ``[lo, hi)`` widened to whole words and merged, shifted by
    ``-lo``. Punctuation pieces are not marked (widened, they would mark the word beside them)."""
    hi = len(text) + lo if hi is None else hi
    spans: list[list] = []
    for a, b, term in sorted(matches):
        if a < lo or b > hi or not any(ch.isalnum() for ch in text[a - lo:b - lo]):
            continue
        while a > lo and text[a - lo - 1].isalnum():
            a -= 1
        while b < hi and text[b - lo].isalnum():
            b += 1
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
            if term not in spans[-1][2]:
                spans[-1][2].append(term)
        else:
            spans.append([a, b, [term]])
    return [(a - lo, b - lo, terms) for a, b, terms in spans]


def snippet(text: str, spans: Sequence[Span], weights: dict[str, float] | None = None,
            width: int = SNIPPET_CHARS) -> tuple[str, list[Span]]:
    """A window of ``text`` of about ``width`` characters holding the heaviest highlighted words, cut at
    word boundaries (``…`` where cut), and the spans inside it in the snippet's offsets."""
    weights = weights or {}
    start = 0
    if len(text) > width and spans:
        def mass(s: int) -> float:
            return sum(max(weights.get(t, 1.0) for t in terms) for a, b, terms in spans if s <= a and b <= s + width)
        start = max((max(0, a - 40) for a, _, _ in spans), key=lambda s: (mass(s), -s))
        if start and start > len(text) - width:
            start = max(0, len(text) - width)
    end = min(len(text), start + width)
    if start > 0:  # begin after a space, so that no word is cut
        space = text.find(" ", start, end)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    prefix, suffix = ("… " if start > 0 else ""), (" …" if end < len(text) else "")
    shift = len(prefix) - start
    inside = [(a + shift, b + shift, terms) for a, b, terms in spans if start <= a and b <= end]
    return prefix + text[start:end] + suffix, inside
