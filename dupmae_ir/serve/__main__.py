"""``python -m dupmae_ir.serve``: serve an index over HTTP (search, explanations, a page) on one process."""
from __future__ import annotations

import argparse
import re
import socket
import sys
from pathlib import Path

from ..cli import CommandParser, add_debug_flag, add_dense_knob_args, default_threads, port_number, positive_int
from ..errors import UserError, run_command
from ..runs import HYBRID_BM25, SEARCH_MODES

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m dupmae_ir.serve",
        description="Serve a `dupmae_ir.encode` index: GET /search, GET /explain, GET /status and a search page "
                    "at /. The model, FAISS, Lucene and the JVM load once; requests run one at a time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    io = p.add_argument_group("index and documents")
    io.add_argument("--index", required=True, help="folder written by `python -m dupmae_ir.encode --output`")
    io.add_argument("--corpus", default=None,
                    help="collection with the documents' titles and text, held in memory (default: the corpus "
                         "recorded in the index's dupmae_index.json)")
    io.add_argument("--data-dir", default=None, help="folder of local BEIR collections for --corpus names")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (loopback by default: the server has no authentication)")
    net.add_argument("--port", type=port_number, default=8000, help="port (0: any free port; the URL is printed)")
    net.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="also answer requests whose Host header is NAME (repeatable; '*': any). Only "
                          "localhost, 127.0.0.1, [::1] and the --host address are answered otherwise, so that a web "
                          "page cannot reach the server by pointing its own name at this machine (DNS rebinding)")
    net.add_argument("--access-log", action="store_true", help="log every request")
    q = p.add_argument_group("search")
    q.add_argument("--encoder", default=None, help="query encoder (default: the one recorded in the index)")
    q.add_argument("--mode", choices=SEARCH_MODES, default=None,
                   help="what /search and the page search with when a request names no mode (default: the mode the "
                        "index's provenance records under 'serving', e.g. hybrid+bm25 from `dupmae_ir.adapt`, when "
                        "its BM25 index exists; else hybrid). --mode hybrid serves the model's own hybrid without "
                        "loading BM25")
    q.add_argument("--device", default="cpu", help="query encoder device")
    q.add_argument("--threads", type=positive_int, default=default_threads(), help="FAISS and Lucene search threads")
    q.add_argument("--depth", type=positive_int, default=1000,
                   help="hits taken from each side before hybrid fusion (as `search --depth`; at least k)")
    q.add_argument("--jvm-heap", default="1g",
                   help="the JVM's maximum heap (-Xmx): without it, the JVM of a long-lived process grows toward a "
                        "quarter of the machine's memory with the garbage of each search")
    add_dense_knob_args(q)
    add_debug_flag(p)
    return p


def bind(host: str, port: int) -> socket.socket:
    """A bound socket for ``host:port``, before any model loads (a taken port fails at once)."""
    if not 0 <= port <= 65535:
        raise UserError("--port", f"{port} is not a port number", "pass 0-65535 (0: any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError("--host", f"{host!r} does not resolve ({e.strerror})",
                        "pass an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"{host}:{port}", f"cannot listen there ({e.strerror})",
                        "pick another --port (0: any free port), or stop the process using it") from None
    sock.set_inheritable(True)
    return sock


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The ``Host`` names served: loopback names, the address listened on (unless a wildcard), ``extra``."""
    from .app import LOOPBACK_HOSTS, host_name

    named = [] if host in ("0.0.0.0", "::", "") else [host]
    return list(dict.fromkeys(host_name(h) for h in [*LOOPBACK_HOSTS, *named, *extra]))


def served_mode(meta: dict, asked: str | None) -> tuple[str, str | None, str]:
    """``(mode, bm25_index, why)``: the mode served by default and the BM25 index it needs (None: none
    loaded). The index's provenance (``dupmae_index.json``) may record ``serving = {mode: hybrid+bm25,
    bm25_index}`` (written by ``dupmae_ir.adapt``); that fusion is served unless ``asked`` names another
    mode or its BM25 index is gone (then the model's own hybrid, and ``why`` says so)."""
    serving = meta.get("serving") if isinstance(meta.get("serving"), dict) else {}
    bm25 = serving.get("bm25_index") if serving.get("mode") == HYBRID_BM25 else None
    present = isinstance(bm25, str) and Path(bm25).is_dir()
    if asked not in (None, HYBRID_BM25):
        return asked, None, "--mode"
    if bm25 is None:
        if asked == HYBRID_BM25:
            raise UserError("--mode hybrid+bm25", "the index's provenance records no BM25 index to fuse with",
                            "serve an index from `dupmae_ir.adapt`, or search with `dupmae_ir.search --mode "
                            "hybrid+bm25 --bm25-index DIR`")
        return "hybrid", None, "the model's own"
    if not present:
        if asked == HYBRID_BM25:
            raise UserError(bm25, "the BM25 index recorded in the index's provenance is not there",
                            "build it again (`python -m dupmae_ir.adapt` with the same folders) or drop --mode")
        return "hybrid", None, f"the model's own: the recorded BM25 index {bm25} is missing"
    return HYBRID_BM25, bm25, f"the model's hybrid fused with BM25 ({bm25}), as the index's provenance records"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..index import load_index

    if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]?", args.jvm_heap):
        raise UserError("--jvm-heap", f"{args.jvm_heap!r} is not a heap size", "pass e.g. 512m or 2g")
    if args.depth < 1:
        raise UserError("--depth", f"{args.depth} hits", "pass a positive number of hits")
    hosts = allowed_hosts(args.host, args.allow_host)
    sock = bind(args.host, args.port)
    info = load_index(args.index)  # checked before the model and the JVM start
    mode, bm25_index, why = served_mode(info.meta, args.mode)
    corpus = args.corpus or info.meta.get("corpus")
    if not corpus:
        raise UserError(info.root, "records no corpus", "pass --corpus with the collection the index was built from")
    from ..java import start_jvm
    from ..search import DupMAESearcher
    from .app import Limits, Service, create_app
    from .documents import load_documents

    keep = None
    if info.dense is not None:  # only the indexed documents are held in memory
        keep = (info.dense / "docid").read_text(encoding="utf-8").splitlines()
    try:
        docs = load_documents(corpus, args.data_dir, keep=keep)
    except UserError as e:
        if args.corpus:
            raise
        raise UserError(f"corpus {corpus} (recorded in the index)", e.what,
                        "pass --corpus with the collection the index was built from") from None
    if info.impact is not None:
        start_jvm([f"-Xmx{args.jvm_heap}"])
    searcher = DupMAESearcher(args.index, encoder=args.encoder, threads=args.threads, device=args.device,
                              ef_search=args.ef_search, nprobe=args.nprobe, bm25_index=bm25_index)
    service = Service(searcher, docs, Limits(depth=args.depth), corpus=str(corpus), mode=mode)
    app = create_app(service, hosts)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: reachable from other machines, without authentication",
              file=sys.stderr)
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:  # the one line a caller waits for
                print(f"serving {url} (index {info.root}, {len(docs)} documents; mode {mode}: {why})", flush=True)

    # a request line long enough for any docid an index may hold (Lucene's 32,766 bytes, %-encoded)
    config = uvicorn.Config(app, access_log=args.access_log, log_level="info", timeout_graceful_shutdown=5,
                            h11_max_incomplete_event_size=128 * 1024)
    try:
        Server(config).run(sockets=[sock])
    finally:
        service.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
