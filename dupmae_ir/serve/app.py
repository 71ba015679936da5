"""The FastAPI application: ``/search``, ``/explain``, ``/status`` and the page at ``/``.

One :class:`~dupmae_ir.search.DupMAESearcher` serves every request. It is not thread-safe (one query
encoder, one Lucene query table, shared OpenMP settings), so its work (search, postings) runs on one
worker thread, one request at a time. The text work (tokenising a document, snippets) runs on a pool of
text threads with their own tokenizers, on at most :attr:`Limits.max_text_chars` of each document, so a
request over long documents holds neither the searcher nor the other requests. The event loop stays
free to answer (and refuse) other requests meanwhile.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from ..errors import UserError
from ..runs import HYBRID_BM25, SEARCH_MODES
from .documents import Capped, capped, snippet, word_spans

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
CSP = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # Host names served by default (any port)
_HOST = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:\[\]/@?#]+)(?::(?P<port>[0-9]{1,5}))?")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/[^\s'\"(),]*")  # an absolute POSIX path inside a text


@dataclass(frozen=True)
class Limits:
    """What a request may ask for; beyond it the answer is a 4xx with a message."""

    max_query_chars: int = 2000  # the encoder reads 32 tokens anyway; longer input is a mistake or abuse
    max_k: int = 1000
    max_terms: int = 50  # explained terms per hit in /search
    max_k_with_terms: int = 100  # hits that /search explains in one request
    max_docid_chars: int = 32766  # Lucene's term limit (UTF-8 bytes): no impact index holds a longer id
    max_text_chars: int = 10_000  # of a hit's "title text" tokenised and scanned for its snippet
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
    """The searcher, the corpus text, the searcher's worker thread and the text threads behind the routes."""

    def __init__(self, searcher, docs: dict[str, tuple[str, str]] | None, limits: Limits = Limits(),
                 corpus: str | None = None, text_workers: int = 2, mode: str = "hybrid"):
        """``mode``: what ``/search`` and the page search with when a request names none (the served mode)."""
        import copy

        from ..explain import explainer_for

        self.searcher, self.docs, self.limits, self.corpus = searcher, docs or {}, limits, corpus
        self.explainer = explainer_for(searcher)
        has = {"dense": searcher.faiss_index is not None, "impact": searcher.impact_searcher is not None}
        has["hybrid"] = has["dense"] and has["impact"]
        has[HYBRID_BM25] = has["hybrid"] and searcher.bm25 is not None  # the searcher holds a BM25 index
        self.modes = [m for m in SEARCH_MODES if has[m]]
        self.mode = mode
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dupmae-searcher")
        self.text_pool = ThreadPoolExecutor(max_workers=text_workers, thread_name_prefix="dupmae-text")
        # one tokenizer per text thread: the searcher's own switches truncation on and off per call
        self.tokenizers: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(text_workers):
            self.tokenizers.put(copy.deepcopy(searcher.encoder.tokenizer))
        self.pending = 0

    def shutdown(self) -> None:
        for pool in (self.worker, self.text_pool):
            pool.shutdown(wait=False, cancel_futures=True)

    @contextmanager
    def admitted(self):
        """Counts a request from its arrival to its answer; 503 when too many are in the server already."""
        if self.pending >= self.limits.max_pending:
            raise RequestError(503, f"busy: {self.pending} requests queued; retry shortly")
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    @staticmethod
    async def _on(pool: ThreadPoolExecutor, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def search(self, q: str, k: int, mode: str, terms: int) -> dict:
        """Hits (searcher thread), then their text, snippets and in-text flags (a text thread)."""
        with self.admitted():
            hits, explained, index_s = await self._on(self.worker, self._search_index, q, k, mode, terms)
            out, text_s = await self._on(self.text_pool, self._hits, hits, explained, terms)
        return {"query": {"qid": "", "query_txt": q}, "mode": mode, "k": k, "alpha": self.searcher.alpha,
                "hits": out, "took_ms": round((index_s + text_s) * 1000, 1)}

    async def explain(self, q: str, docid: str, all_terms: bool) -> dict:
        with self.admitted():
            e = await self._on(self.worker, self.explainer.explain, q, docid, None, all_terms)
            return await self._on(self.text_pool, self._explanation, e)

    # --- searcher thread --------------------------------------------------------------------------
    def _search_index(self, q: str, k: int, mode: str, terms: int):
        t0 = time.perf_counter()
        enc = self.explainer.encode_query(q)  # one encoding serves the search and the explanations
        hits = self.searcher.search_parts(q, k, mode, depth=max(k, self.limits.depth), encoded=enc)
        explained = [None] * len(hits)
        if terms > 0 and hits and self.explainer.postings is not None:
            explained = self.explainer.explain_many(q, [h.docid for h in hits])
        return hits, explained, time.perf_counter() - t0

    # --- text threads -----------------------------------------------------------------------------
    def text_of(self, docid: str) -> Capped | None:
        """The document's title and text cut to :attr:`Limits.max_text_chars` (None: not in the corpus)."""
        doc = self.docs.get(docid)
        return capped(doc[0], doc[1], self.limits.max_text_chars) if doc is not None else None

    @contextmanager
    def _tokenizer(self):
        tokenizer = self.tokenizers.get()
        try:
            yield tokenizer
        finally:
            self.tokenizers.put(tokenizer)

    def _with_text(self, e, doc: Capped | None):
        from ..explain import document_pieces, with_text

        if e is None or doc is None:
            return e
        with self._tokenizer() as tokenizer:
            return with_text(e, document_pieces(tokenizer, doc.full))

    def _hits(self, hits, explained, terms: int) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        out = []
        for h, e in zip(hits, explained):
            doc = self.text_of(h.docid)
            e = self._with_text(e, doc)
            title, text, offset = (doc.title, doc.text, doc.offset) if doc is not None else ("", "", 0)
            matches = e.text_matches if e is not None else []
            weights = {t.term: t.score for t in e.terms} if e is not None else {}
            snip, spans = snippet(text, word_spans(text, matches, offset, offset + len(text)), weights,
                                  more=doc is not None and doc.truncated and bool(text))
            hit = {"docid": h.docid, "rank": h.rank, "score": h.score, "dense_score": h.dense,
                   "sparse_score": h.sparse, "impact_score": h.impact, "title": title, "snippet": snip,
                   "highlights": _weighted(spans, weights),
                   "title_highlights": _weighted(word_spans(title, matches, 0, len(title)), weights),
                   "in_corpus": doc is not None, "text_truncated": doc is not None and doc.truncated}
            if e is not None:
                hit["terms"] = [asdict(t) for t in e.terms[:terms]]
                hit["matched_terms"] = e.matched_terms
                hit["expansion_terms"] = len(e.expansion_terms)
            out.append(hit)
        return out, time.perf_counter() - t0

    def _explanation(self, e) -> dict:
        doc = self.text_of(e.docid)
        e = self._with_text(e, doc)
        return {**e.to_dict(), "title": doc.title if doc is not None else "", "in_corpus": doc is not None,
                "text_truncated": doc is not None and doc.truncated}

    def status(self) -> dict:
        info = self.searcher.info
        return {"index": public_name(info.root), "encoder": public_name(self.searcher.encoder_name),
                "docs": info.docs, "alpha": self.searcher.alpha, "mode": self.mode, "modes": self.modes,
                "corpus": public_name(self.corpus), "documents_loaded": len(self.docs), "limits": asdict(self.limits)}


def public_name(value) -> str | None:
    """What a response may say of a server path: its last part (a model id or a collection name stays as
    given; an absolute path inside a longer text is cut to its last part too)."""
    if value is None:
        return None
    text = str(value)
    if Path(text).is_absolute() or Path(text).exists():
        return Path(text).name
    return without_paths(text)


def without_paths(text: str) -> str:
    """``text`` with each absolute path in it cut to its last part (for error messages)."""
    return _ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name, text)


def host_name(value: str) -> str:
    """A ``Host`` name as the allow-list holds it: lower case, IPv6 in brackets, without a port
    (``"*"``: any host)."""
    value = value.strip().lower()
    if value == "*":
        return value
    if ":" in value and not value.startswith("["):  # a bare IPv6 address
        value = f"[{value}]"
    m = _HOST.fullmatch(value)
    if m is None:
        raise UserError("--allow-host", f"{value!r} is not a host name",
                        "pass a name or address as a browser sends it, e.g. myhost, 192.168.1.5 or [fe80::1]")
    return m["host"]


class AllowedHosts:
    """ASGI middleware: only requests whose ``Host`` header names an allowed host (any port) are served;
    400 for a missing or malformed one, 403 for another name (a DNS-rebinding page sends its own).
    Starlette's ``TrustedHostMiddleware`` answers in plain text, and in releases that fastapi>=0.110
    allows it reads ``[::1]:8000`` as the host ``[``."""

    def __init__(self, app, hosts: Iterable[str]):
        self.app, self.hosts = app, frozenset(host_name(h) for h in hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or "*" in self.hosts:
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse

        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        m = _HOST.fullmatch(values[0]) if len(values) == 1 else None
        if m is None:
            status, message = 400, "Host: missing, repeated or malformed header"
        elif m["host"].lower() in self.hosts:
            return await self.app(scope, receive, send)
        else:
            status, message = 403, (f"Host: not a name this server answers to ({', '.join(sorted(self.hosts))}); "
                                    "to serve another, start it with --allow-host NAME")
        await JSONResponse({"detail": message, "status": status}, status_code=status, headers=HEADERS)(
            scope, receive, send)


def _weighted(spans, weights: dict[str, float]) -> list[list]:
    """``[start, end, terms, score]``: each highlighted word with its strongest term's contribution."""
    return [[a, b, terms, max(weights.get(t, 0.0) for t in terms)] for a, b, terms in spans]


def create_app(service: Service, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS):
    """The FastAPI app over a :class:`Service`, answering requests whose ``Host`` is one of
    ``allowed_hosts`` (names or addresses, any port; ``"*"``: any)."""
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
    async def _unknown_doc(request: Request, e: UnknownDocumentError):  # without the index's folder
        return error(404, f"{e.where}: not a document of the index {public_name(service.searcher.info.root)}"
                          f" (fix: {e.fix})")

    @app.exception_handler(UserError)
    async def _user_error(request: Request, e: UserError):
        return error(422, without_paths(str(e)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):  # a bug: logged, answered, and the server goes on
        log.exception("internal error on %s", request.url.path)
        return error(500, f"internal error: {type(e).__name__}")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/status")
    async def status():
        return service.status()

    @app.get("/search")
    async def search(q: str | None = None, k: int = 10, mode: str | None = None, terms: int = 0):
        """Top ``k`` hits in ``mode`` (default: the served mode, ``/status``), each with its dense, sparse
        and impact scores; ``terms`` > 0 adds each hit's top contributing terms (and highlights matched
        words in its snippet)."""
        q = _query(q, limits)
        mode = service.mode if mode is None else mode
        if not 1 <= k <= limits.max_k:
            raise RequestError(422, f"k: {k}; must be in [1, {limits.max_k}]")
        if mode not in SEARCH_MODES:
            raise RequestError(422, f"mode: {mode!r}; valid: {', '.join(SEARCH_MODES)}")
        if mode not in service.modes:
            lacks = "a BM25 index (served when the index's provenance records one)" if mode == HYBRID_BM25 else \
                "a part this index lacks"
            raise RequestError(422, f"mode: {mode!r} needs {lacks}; valid: {', '.join(service.modes)}")
        if not 0 <= terms <= limits.max_terms:
            raise RequestError(422, f"terms: {terms}; must be in [0, {limits.max_terms}]")
        if terms and k > limits.max_k_with_terms:
            raise RequestError(422, f"k: {k} with terms > 0; at most {limits.max_k_with_terms} hits are explained")
        return await service.search(q, k, mode, terms)

    @app.get("/explain")
    async def explain(q: str | None = None, docid: str | None = None, all_terms: bool = False):
        """The score of ``docid`` for ``q`` taken apart: dense, and sparse term by term."""
        q = _query(q, limits)
        if docid is None or not docid.strip():
            raise RequestError(422, "docid: missing (pass &docid=ID)")
        if len(docid) > limits.max_docid_chars:
            raise RequestError(422, f"docid: {len(docid)} characters; at most {limits.max_docid_chars}")
        return await service.explain(q, docid, all_terms)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(AllowedHosts, hosts=allowed_hosts)  # outermost: before any route or error handler
    return app
