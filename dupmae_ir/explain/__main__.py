"""``python -m dupmae_ir.explain``: why one document matched one query, as a terminal table."""
from __future__ import annotations

import argparse
import json
import sys

from ..cli import CommandParser, add_debug_flag, nonnegative_int
from ..errors import UserError, run_command


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.explain",
        description="Take apart the score of one document for one query: the dense inner product (FAISS) and "
                    "the sparse score term by term (q_t x d_t, d_t read from the Lucene impact index), with "
                    "expansion terms (not in the document's text) marked.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("input")
    io.add_argument("--index", required=True, help="folder written by `python -m dupmae_ir.encode --output`")
    io.add_argument("--query", required=True, help="query text")
    io.add_argument("--docid", required=True, help="document id")
    io.add_argument("--corpus", default=None,
                    help="collection holding the document's text, for the in-text column (default: the corpus "
                         "recorded in the index's dupmae_index.json, when it is still there)")
    io.add_argument("--data-dir", default=None, help="folder of local BEIR collections for --corpus names")
    out = p.add_argument_group("output")
    out.add_argument("--top", type=nonnegative_int, default=30, help="terms shown (0: all)")
    out.add_argument("--all-terms", action="store_true",
                     help="also list the query terms the document lacks (d_t = 0)")
    out.add_argument("--json", action="store_true", help="print the explanation as JSON instead of a table")
    q = p.add_argument_group("query encoder")
    q.add_argument("--encoder", default=None, help="query encoder (default: the one recorded in the index)")
    q.add_argument("--device", default="cpu", help="query encoder device")
    add_debug_flag(p)
    return p


def _text(args, meta: dict, docid: str) -> tuple[str | None, str]:
    """The document's text (title and text joined) and a note on where it came from."""
    from ..data import doc_text
    from . import find_document

    corpus = args.corpus or meta.get("corpus")
    if not corpus:
        return None, "no corpus recorded in the index: pass --corpus for the in-text column"
    try:
        doc = find_document(corpus, docid, args.data_dir)
    except UserError:
        if args.corpus:
            raise
        return None, f"the recorded corpus {corpus!r} cannot be read: pass --corpus for the in-text column"
    if doc is None:
        if args.corpus:
            raise UserError("--corpus", f"{corpus} holds no document {docid!r}",
                            "pass the collection the index was built from")
        return None, f"the recorded corpus {corpus!r} lacks {docid!r}: in-text column unknown"
    return doc_text(doc), f"text from {corpus}"


def format_table(e, top: int, note: str) -> str:
    """The explanation as fixed-width text."""
    rows = e.terms if top <= 0 else e.terms[:top]
    width = max([len("term")] + [len(t.term) for t in rows])
    yes_no = {True: "yes", False: "EXPANSION", None: "?"}
    lines = [f"query: {e.query!r}", f"docid: {e.docid}   alpha = 1/(s_q*s_d) = {e.alpha:g}   ({note})", ""]
    if e.impact_score is not None:
        lines.append(f"{'rank':>4}  {'term':<{width}}  {'q_t':>6}  {'d_t':>6}  {'q_t*d_t':>9}  {'x alpha':>9}  in text")
        for i, t in enumerate(rows, start=1):
            lines.append(f"{i:>4}  {t.term:<{width}}  {t.query_weight:>6}  {t.doc_weight:>6}  {t.impact:>9}  "
                         f"{t.score:>9.4f}  {yes_no[t.in_text]}")
        if len(rows) < len(e.terms):
            rest = e.terms[len(rows):]
            lines.append(f"      ... {len(rest)} more terms: q_t*d_t {sum(t.impact for t in rest)}, "
                         f"x alpha {sum(t.score for t in rest):.4f} (--top 0 shows all)")
        expansions = sum(1 for t in e.terms if t.impact > 0 and t.in_text is False)
        lines += ["", f"matched terms: {e.matched_terms} of {e.query_terms} query terms"
                      + (f" ({expansions} expansions, not in the text)" if e.terms and e.terms[0].in_text is not None
                         else ""),
                  f"sparse: sum q_t*d_t = {e.impact_score} (Lucene's integer score; Lucene adds in float32, exact "
                  f"below 2^24) x alpha = {e.sparse_score:.6f}"]
        if e.dropped_terms:
            lines.append(f"        {len(e.dropped_terms)} document terms not sent to Lucene (--min-idf): "
                         f"{', '.join(e.dropped_terms[:8])}")
    if e.dense_score is not None:
        lines.append(f"dense:  h_q . h_d = {e.dense_score:.6f}")
    if e.hybrid_score is not None:
        lines.append(f"hybrid: dense + sparse = {e.hybrid_score:.6f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.query.strip():
        raise UserError("--query", "empty query", "pass the query text")
    from ..index import load_index

    info = load_index(args.index)  # checked before the model and the JVM start
    text, note = _text(args, info.meta, args.docid)
    from ..search import DupMAESearcher
    from . import explain

    searcher = DupMAESearcher(args.index, encoder=args.encoder, device=args.device)
    e = explain(searcher, args.query, args.docid, text, all_terms=args.all_terms)
    print(json.dumps(e.to_dict(), indent=1) if args.json else format_table(e, args.top, note))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
