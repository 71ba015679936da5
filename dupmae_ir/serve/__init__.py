"""A long-lived search server: one :class:`~dupmae_ir.search.DupMAESearcher` (model, FAISS, Lucene and
the JVM loaded once) behind a small HTTP API and a page that shows why each hit matched.

- ``GET /search?q=&k=10&mode=hybrid|dense|impact&terms=0``: hits with their dense, sparse and impact
  scores, title and snippet (``terms`` > 0: each hit's top contributing terms, matched words
  highlighted);
- ``GET /explain?q=&docid=``: :func:`dupmae_ir.explain.explain` as JSON;
- ``GET /status``; ``GET /``: the page (plain HTML, CSS and JS from :data:`.app.STATIC`, nothing
  fetched from elsewhere).

Bad requests get a 4xx JSON ``{"detail": message, "status": code}``, never a 500; a ``Host`` header
other than a loopback name (or one given with ``--allow-host``) gets 403. The searcher is not
thread-safe: its part of each request runs on one worker thread, the text part (tokenising at most
:attr:`.app.Limits.max_text_chars` of a document, snippets) on a pool of text threads
(:class:`.app.Service`). No answer names a folder of the server.

Command: ``python -m dupmae_ir.serve --index DIR [--corpus C] [--host 127.0.0.1] [--port 8000]
[--allow-host NAME]``; library: :func:`.app.create_app` over a :class:`.app.Service`.
"""
from .app import Limits, Service, create_app
from .documents import load_documents, snippet, word_spans

__all__ = ["Limits", "Service", "create_app", "load_documents", "snippet", "word_spans"]
