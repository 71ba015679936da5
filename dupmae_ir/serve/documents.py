"""Document text for the server: the corpus held in memory, snippets and highlighted words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import UserError

SNIPPET_CHARS = 300
Span = tuple[int, int, list[str]]  # (start, end, terms) in a string


@dataclass(frozen=True)
class Capped:
    """A document's title and text cut to a number of characters: what one request may scan."""

    title: str
    text: str
    full: str  # "title text" as dupmae_ir.data.doc_text joins them
    offset: int  # where ``text`` starts in ``full``
    truncated: bool  # the title or the text was cut


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


def capped(title: str, text: str, chars: int) -> Capped:
    """The first ``chars`` characters of ``"title text"`` (cut at a space), in its parts."""
    short_title = prefix(title, chars)
    short_text = prefix(text, chars - len(short_title) - 1) if len(short_title) == len(title) else ""
    full, offset = joined(short_title, short_text)
    return Capped(short_title, short_text, full, offset, (short_title, short_text) != (title, text))


def prefix(s: str, n: int) -> str:
    """``s`` cut to at most ``n`` characters, at its last space when that keeps more than half (a word cut
    in two would tokenise into other pieces)."""
    if len(s) <= n:
        return s
    if n <= 0:
        return ""
    space = s.rfind(" ", 0, n + 1)
    return s[:space] if space > n // 2 else s[:n]


def word_spans(text: str, matches: Iterable[tuple[int, int, str]], lo: int = 0, hi: int | None = None) -> list[Span]:
    """Matches (piece offsets) inside ``[lo, hi)`` widened to whole words and merged, shifted by
    ``-lo``, sorted and disjoint. Punctuation pieces are not marked (widened, they would mark the word
    beside them). Linear in the text once the matches are sorted: no character is widened over twice."""
    hi = len(text) + lo if hi is None else hi
    spans: list[list] = []
    for a, b, term in sorted(matches):
        if a < lo or b > hi or not any(ch.isalnum() for ch in text[a - lo:b - lo]):
            continue
        if spans and a <= spans[-1][1]:  # inside or touching the last word: widen right from its end only
            last = spans[-1]
            b = max(b, last[1])
            while b < hi and text[b - lo].isalnum():
                b += 1
            last[1] = b
            if term not in last[2]:
                last[2].append(term)
            continue
        while a > lo and text[a - lo - 1].isalnum():  # stops at the last span's end: a non-word character
            a -= 1
        while b < hi and text[b - lo].isalnum():
            b += 1
        spans.append([a, b, [term]])
    return [(a - lo, b - lo, terms) for a, b, terms in spans]


def heaviest_window(spans: Sequence[Span], weights: dict[str, float], width: int) -> int:
    """Where a window of ``width`` characters holding the largest weight of whole spans starts: one of
    ``a - 40`` for a span ``(a, b, terms)``, the first of the heaviest. ``spans`` sorted and disjoint
    (as :func:`word_spans` gives them), so both window edges only move right: linear time."""
    mass = [0.0]  # prefix sums of each span's weight (its strongest term's)
    for _, _, terms in spans:
        mass.append(mass[-1] + max(weights.get(t, 1.0) for t in terms))
    best, best_mass = 0, -1.0
    first = last = 0  # spans[first:last] lie in the window [s, s + width]
    for a, _, _ in spans:
        s = max(0, a - 40)
        while first < len(spans) and spans[first][0] < s:
            first += 1
        last = max(last, first)
        while last < len(spans) and spans[last][1] <= s + width:
            last += 1
        if mass[last] - mass[first] > best_mass:
            best, best_mass = s, mass[last] - mass[first]
    return best


def snippet(text: str, spans: Sequence[Span], weights: dict[str, float] | None = None,
            width: int = SNIPPET_CHARS, more: bool = False) -> tuple[str, list[Span]]:
    """A window of ``text`` of about ``width`` characters holding the heaviest highlighted words, cut at
    word boundaries (``…`` where cut), and the spans inside it in the snippet's offsets. ``spans``:
    sorted and disjoint (:func:`word_spans`); ``more``: ``text`` is a prefix of a longer text."""
    weights = weights or {}
    start = 0
    if len(text) > width and spans:
        start = heaviest_window(spans, weights, width)
        if start and start > len(text) - width:
            start = max(0, len(text) - width)
    end = min(len(text), start + width)
    if start > 0:  # begin after a space, so that no word is cut
        space = text.find(" ", start, end)
        start = space + 1 if 0 <= space < start + 30 else start
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start + width // 2 else end
    prefix_mark, suffix = ("… " if start > 0 else ""), (" …" if end < len(text) or more else "")
    shift = len(prefix_mark) - start
    inside = [(a + shift, b + shift, terms) for a, b, terms in spans if start <= a and b <= end]
    return prefix_mark + text[start:end] + suffix, inside
