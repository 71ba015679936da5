"""The FastAPI application: ``/search``, ``/explain``, ``/status`` and the page at ``/``.

One :class:`~dupmae_ir.search.DupMAESearcher` serves every request. It is not thread-safe (one query
encoder, one Lucene query table, shared OpenMP settings), so all its work runs on one worker thread,
one request at a time; the event loop stays free to answer (and refuse) other requests meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..runs import MODES
from .documents import joined, snippet, word_spans

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; beyond it the answer is a 4xx with a message."""

    max_query_chars: int = 2000  # the encoder reads 32 tokens anyway; longer input is a mistake or abuse
    max_k: int = 1000
    max_terms: int = 50  # explained terms per hit in /search
    max_k_with_terms: int = 100  # hits that /search explains in one request
    max_docid_chars: int = 512
    max_pending: int = 64  # requests queued for the worker; beyond, 503 (retry later)
    depth: int = 1000  # hits per side before hybrid fusion (as `search --depth`)


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _query(q: str | None, limits: Limits) -> str:
    if q is None:
        raise RequestError(422, "q: missing (pass ?q=your+query)")
    q = q.strip()
    if not q:
        raise RequestError(422, "q: empty query")
    if len(q) > limits.max_query_chars:
        raise RequestError(422, f"q: {len(q)} characters; at most {limits.max_query_chars}")
    if "\x00" in q:
        raise RequestError(422, "q: contains a NUL character")
    return q


class Service:
    """The searcher, the corpus text and the worker thread behind the routes."""

    def __init__(self, searcher, docs: dict[str, tuple[str, str]] | None, limits: Limits = Limits(),
                 corpus: str | None = None):
        from ..explain import explainer_for

        self.searcher, self.docs, self.limits, self.corpus = searcher, docs or {}, limits, corpus
        self.explainer = explainer_for(searcher)
        has = {"dense": searcher.faiss_index is not None, "impact": searcher.impact_searcher is not None}
        has["hybrid"] = has["dense"] and has["impact"]
        self.modes = [m for m in MODES if has[m]]
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dupmae-searcher")
        self.pending = 0

    async def run(self, fn, *args):
        """``fn(*args)`` on the worker thread; 503 when too many requests wait already."""
        if self.pending >= self.limits.max_pending:
            raise RequestError(503, f"busy: {self.pending} requests queued; retry shortly")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)
        finally:
            self.pending -= 1

    # --- validated work (worker thread) ---------------------------------------------------------
    def text_of(self, docid: str) -> tuple[str, str, str | None]:
        """``(title, text, joined text or None when the corpus lacks the document)``."""
        if docid not in self.docs:
            return "", "", None
        title, text = self.docs[docid]
        return title, text, joined(title, text)[0]

    def search(self, q: str, k: int, mode: str, terms: int) -> dict:
        t0 = time.perf_counter()
        # one encoding serves the search and the explanations
        enc = self.explainer.encode_query(q)
        hits = self.searcher.search_parts(q, k, mode, depth=max(k, self.limits.depth), encoded=enc)
        explained = {}
        if terms > 0 and hits and self.explainer.postings is not None:
            texts = [self.text_of(h.docid)[2] for h in hits]
            explained = {e.docid: e for e in self.explainer.explain_many(q, [h.docid for h in hits], texts)}
        out = []
        for h in hits:
            title, text, full = self.text_of(h.docid)
            e = explained.get(h.docid)
            matches = e.text_matches if e is not None else []
            weights = {t.term: t.score for t in e.terms} if e is not None else {}
            _, offset = joined(title, text)
            snip, spans = snippet(text, word_spans(text, matches, offset, offset + len(text)), weights)
            hit = {"docid": h.docid, "rank": h.rank, "score": h.score, "dense_score": h.dense,
                   "sparse_score": h.sparse, "impact_score": h.impact, "title": title, "snippet": snip,
                   "highlights": _weighted(spans, weights),
                   "title_highlights": _weighted(word_spans(title, matches, 0, len(title)), weights),
                   "in_corpus": full is not None}
            if e is not None:
                hit["terms"] = [asdict(t) for t in e.terms[:terms]]
                hit["matched_terms"] = e.matched_terms
                hit["expansion_terms"] = len(e.expansion_terms)
            out.append(hit)
        return {"query": {"qid": "", "query_txt": q}, "mode": mode, "k": k, "alpha": self.searcher.alpha,
                "hits": out, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}

    def explain(self, q: str, docid: str, all_terms: bool) -> dict:
        title, _, full = self.text_of(docid)
        e = self.explainer.explain(q, docid, full, all_terms)
        return {**e.to_dict(), "title": title, "in_corpus": full is not None}

    def status(self) -> dict:
        info = self.searcher.info
        return {"index": str(info.root), "encoder": self.searcher.encoder_name, "docs": info.docs,
                "alpha": self.searcher.alpha, "modes": self.modes, "corpus": self.corpus,
                "documents_loaded": len(self.docs), "limits": asdict(self.limits)}


def _weighted(spans, weights: dict[str, float]) -> list[list]:
    """``[start, end, terms, score]``: each highlighted word with its strongest term's contribution."""
    return [[a, b, terms, max(weights.get(t, 0.0) for t in terms)] for a, b, terms in spans]


def create_app(service: Service):
    """The FastAPI app over a :class:`Service`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from ..explain import UnknownDocumentError

    limits = service.limits
    app = FastAPI(title="dupmae-ir", description="DupMAE dense, impact and hybrid search with explanations",
                  docs_url=None, redoc_url=None)  # Swagger UI would load from a CDN
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    def error(status: int, message: str, headers: dict | None = None):
        return JSONResponse({"detail": message, "status": status}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, e: RequestError):
        return error(e.status, e.message, {"Retry-After": "1"} if e.status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in err.get('loc', ())[1:]) or 'request'}: {err.get('msg')}"
                 for err in e.errors()]
        return error(422, "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, e: HTTPException):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(UnknownDocumentError)
    async def _unknown_doc(request: Request, e: UnknownDocumentError):
        return error(404, str(e))

    @app.exception_handler(UserError)
    async def _user_error(request: Request, e: UserError):
        return error(422, str(e))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):  # a bug: logged, answered, and the server goes on
        log.exception("internal error on %s", request.url.path)
        return error(500, f"internal error: {type(e).__name__}")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/status")
    async def status():
        return service.status()

    @app.get("/search")
    async def search(q: str | None = None, k: int = 10, mode: str = "hybrid", terms: int = 0):
        """Top ``k`` hits in ``mode``, each with its dense, sparse and impact scores; ``terms`` > 0
        adds each hit's top contributing terms (and highlights matched words in its snippet)."""
        q = _query(q, limits)
        if not 1 <= k <= limits.max_k:
            raise RequestError(422, f"k: {k}; must be in [1, {limits.max_k}]")
        if mode not in MODES:
            raise RequestError(422, f"mode: {mode!r}; valid: {', '.join(MODES)}")
        if mode not in service.modes:
            raise RequestError(422, f"mode: {mode!r} needs a part this index lacks; valid: {', '.join(service.modes)}")
        if not 0 <= terms <= limits.max_terms:
            raise RequestError(422, f"terms: {terms}; must be in [0, {limits.max_terms}]")
        if terms and k > limits.max_k_with_terms:
            raise RequestError(422, f"k: {k} with terms > 0; at most {limits.max_k_with_terms} hits are explained")
        return await service.run(service.search, q, k, mode, terms)

    @app.get("/explain")
    async def explain(q: str | None = None, docid: str | None = None, all_terms: bool = False):
        """The score of ``docid`` for ``q`` taken apart: dense, and sparse term by term."""
        q = _query(q, limits)
        if docid is None or not docid.strip():
            raise RequestError(422, "docid: missing (pass &docid=ID)")
        if len(docid) > limits.max_docid_chars:
            raise RequestError(422, f"docid: {len(docid)} characters; at most {limits.max_docid_chars}")
        return await service.run(service.explain, q, docid, all_terms)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
