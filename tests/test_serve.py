"""``python -m dupmae_ir.serve`` and ``python -m dupmae_ir.explain`` on a real index of the first 60
SciFact documents, built by the toolkit (``encode_corpus``, the tiny random checkpoint, fp32).

The server runs as a subprocess on a free loopback port; its answers are checked against the index
files read independently here: FAISS vectors (``faiss_vectors``), the Lucene postings with their
impacts (``lucene_impact_postings``) and the query encoded by a separate ``DupMAEEncoder``. A real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium) loads the page,
searches, and waits for the hits and their term bars. Set DUPMAE_SERVE_INDEX to serve an index built
earlier instead (e.g. the screenshot's 1,000 SciFact documents), DUPMAE_SCREENSHOT to a path to keep
a copy of the browser's screenshot there (docs/serve.png).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, faiss_vectors, lucene_impact_postings, run_cli, write_corpus_slice

SLICE = 60
QUERY = "vitamin D deficiency and the risk of cancer"
QUERIES = [QUERY, "stem cell transplantation causes immune deficiency", "Birth weight and breast cancer risk"]


def _env(**extra) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OPENAI_API_KEY=os.environ.get("OPENAI_API_KEY", "unused"), PYTHONPATH=str(ROOT), **extra)


@pytest.fixture(scope="module")
def corpus(scifact_dir, tmp_path_factory) -> Path:
    """The first SLICE SciFact documents as a BEIR folder."""
    folder = tmp_path_factory.mktemp("serve") / "coll"
    folder.mkdir()
    write_corpus_slice(scifact_dir, folder / "corpus.jsonl", SLICE)
    return folder


@pytest.fixture(scope="module")
def index(corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    from dupmae_ir.encode import encode_corpus

    reuse = os.environ.get("DUPMAE_SERVE_INDEX")
    if reuse:
        return Path(reuse).resolve()
    out = tmp_path_factory.mktemp("serve_index") / "index"
    return encode_corpus(corpus, out, encoder=str(tiny_checkpoint), dtype="fp32", chunk_size=32, progress=False)


@pytest.fixture(scope="module")
def ref(index):
    """What the answers must equal, read from the index files and a separate encoder."""
    from dupmae_ir.data import doc_text, resolve
    from dupmae_ir.index import load_index
    from dupmae_ir.inference import DupMAEEncoder

    info = load_index(index)
    encoder = DupMAEEncoder(info.encoder, dtype="fp32")
    for name, value in info.retriever.items():
        assert getattr(encoder.config, name) == value  # the checkpoint encodes queries as the index says
    matrix, docids = faiss_vectors(index)
    by_doc: dict[str, dict[str, int]] = {}
    for term, postings in lucene_impact_postings(index / "impact", docs=len(docids)).items():
        for docid, weight in postings:
            by_doc.setdefault(docid, {})[term] = weight
    texts = {d.id: doc_text(d) for d in resolve(info.meta["corpus"]).iter_docs()}
    queries = {q: encoder.encode_queries([q]) for q in QUERIES}
    return {"info": info, "encoder": encoder, "matrix": matrix, "rows": {d: i for i, d in enumerate(docids)},
            "lucene": by_doc, "texts": texts, "queries": queries, "alpha": info.alpha}


class Server:
    """``python -m dupmae_ir.serve`` as a child process; ``url`` once it answers."""

    def __init__(self, index: Path, folder: Path, *args):
        self.out, self.err = folder / "serve.out", folder / "serve.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "dupmae_ir.serve", "--index", str(index),
                                          "--host", "127.0.0.1", "--port", "0", *args],
                                         cwd=ROOT, env=_env(), stdout=out, stderr=err)
        self.url = None

    def wait(self, timeout: float = 300) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = next((ln for ln in self.out.read_text().splitlines() if ln.startswith("serving ")), None)
            if line:
                self.url = line.split()[1].rstrip("/")
                if get(self.url, "/status")[0] == 200:
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"server did not start (exit {self.proc.returncode}): {self.err.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def get(url: str, path: str, **params) -> tuple[int, dict]:
    """``(status, JSON body)`` of a GET on the loopback server."""
    query = urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(f"{url}{path}{'?' + query if query else ''}", timeout=300) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def server(index, tmp_path_factory):
    srv = Server(index, tmp_path_factory.mktemp("server")).wait()
    yield srv
    srv.stop()


FLOAT32_EXACT = 2 ** 24  # Lucene adds term scores in float32: integers above this are rounded


def assert_lucene_integer(reported: int, exact: int, terms: int) -> None:
    """Lucene's impact score is the exact integer sum below 2**24 (the tiny index's scores); above it
    (the default backbone's ~2e7), within float32 rounding of a sum of ``terms`` terms."""
    if exact < FLOAT32_EXACT:
        assert reported == exact
    else:
        assert abs(reported - exact) <= terms * 2.0 ** (math.floor(math.log2(exact)) - 23), (reported, exact)


def _exact(ref, query: str, docid: str) -> tuple[float, int]:
    """The dense inner product from the FAISS vector and the integer dot product from the postings."""
    enc = ref["queries"][query]
    dense = float(ref["matrix"][ref["rows"][docid]] @ enc.dense[0])
    doc = ref["lucene"].get(docid, {})
    return dense, sum(w * doc.get(t, 0) for t, w in enc.impacts[0].items())


@pytest.mark.parametrize("mode", ["hybrid", "dense", "impact"])
def test_search_reports_each_sides_score(server, ref, mode):
    status, body = get(server.url, "/search", q=QUERY, k=10, mode=mode)
    assert status == 200, body
    assert body["mode"] == mode and body["query"]["query_txt"] == QUERY and body["alpha"] == ref["alpha"]
    hits = body["hits"]
    assert [h["rank"] for h in hits] == list(range(1, 11))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        dense, impact = _exact(ref, QUERY, h["docid"])
        assert h["dense_score"] == pytest.approx(dense, rel=1e-5, abs=1e-5)
        # Lucene's integer score: the dot product of the query weights and the postings' impacts
        assert_lucene_integer(h["impact_score"], impact, len(ref["queries"][QUERY].impacts[0]))
        assert h["sparse_score"] == pytest.approx(h["impact_score"] * ref["alpha"], rel=1e-12)
        expected = {"dense": dense, "impact": impact, "hybrid": dense + impact * ref["alpha"]}[mode]
        assert h["score"] == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert h["title"] and ref["texts"][h["docid"]].startswith(h["title"]) and h["snippet"]


def test_explain_takes_the_sparse_score_apart_exactly(server, ref):
    _, body = get(server.url, "/search", q=QUERY, k=5, mode="hybrid")
    tokenizer = ref["encoder"].tokenizer
    qimp = ref["queries"][QUERY].impacts[0]
    expansions = 0
    for hit in body["hits"]:
        status, e = get(server.url, "/explain", q=QUERY, docid=hit["docid"])
        assert status == 200, e
        terms = e["terms"]
        # the products sum exactly to the integer score the searcher reported (Lucene's, when below 2**24);
        # de-quantised, to its sparse score
        assert sum(t["impact"] for t in terms) == e["impact_score"]
        assert_lucene_integer(hit["impact_score"], e["impact_score"], len(terms))
        if e["impact_score"] < FLOAT32_EXACT:
            assert math.fsum(t["score"] for t in terms) == pytest.approx(hit["sparse_score"], rel=1e-12)
        assert math.fsum(t["score"] for t in terms) == pytest.approx(e["sparse_score"], rel=1e-12)
        assert e["dense_score"] == pytest.approx(_exact(ref, QUERY, hit["docid"])[0], rel=1e-5, abs=1e-5)
        assert e["hybrid_score"] == pytest.approx(hit["score"], rel=1e-6)
        # every weight is the one stored in Lucene; every query term the document holds is listed
        doc = ref["lucene"][hit["docid"]]
        assert {t["term"] for t in terms} == {t for t in qimp if t in doc}
        pieces = set(tokenizer.tokenize(ref["texts"][hit["docid"]]))
        for t in terms:
            assert t["doc_weight"] == doc[t["term"]] > 0
            assert t["query_weight"] == qimp[t["term"]]
            assert t["impact"] == t["query_weight"] * t["doc_weight"]
            assert t["in_text"] == (t["term"] in pieces)
        expansions += sum(not t["in_text"] for t in terms)
        assert [t["impact"] for t in terms] == sorted((t["impact"] for t in terms), reverse=True)
        assert e["matched_terms"] == len(terms) and e["query_terms"] == len(qimp)
    assert expansions > 0  # a random model weights terms no document says
    # all_terms: the query terms the document lacks are listed with d_t = 0
    status, full = get(server.url, "/explain", q=QUERY, docid=body["hits"][0]["docid"], all_terms="true")
    assert status == 200 and len(full["terms"]) > full["matched_terms"]
    assert {t["term"] for t in full["terms"] if t["doc_weight"] == 0}.isdisjoint(ref["lucene"][full["docid"]])


def test_search_terms_and_highlights_match_the_explanation(server, ref):
    tokenizer = ref["encoder"].tokenizer
    status, body = get(server.url, "/search", q=QUERIES[1], k=8, mode="hybrid", terms=6)
    assert status == 200, body
    marked = 0
    for hit in body["hits"]:
        _, e = get(server.url, "/explain", q=QUERIES[1], docid=hit["docid"])
        assert hit["terms"] == e["terms"][:6] and hit["matched_terms"] == e["matched_terms"]
        in_text = {t["term"]: t["score"] for t in e["terms"] if t["in_text"]}
        for text, spans in ((hit["snippet"], hit["highlights"]), (hit["title"], hit["title_highlights"])):
            for start, end, terms, score in spans:  # each marked word is made of pieces that are matched terms
                word = text[start:end]
                assert word[0].isalnum() and word[-1].isalnum(), word
                assert set(terms) <= set(in_text) and set(terms) <= set(tokenizer.tokenize(word)), (word, terms)
                assert score == max(in_text[t] for t in terms)
                marked += 1
    assert marked > 0


def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(server, ref):
    long_query = " ".join(["word"] * 10_000)
    cases = [
        ("/search", {}), ("/search", {"q": ""}), ("/search", {"q": "   "}), ("/search", {"q": long_query}),
        ("/search", {"q": "a", "k": 0}), ("/search", {"q": "a", "k": -3}), ("/search", {"q": "a", "k": 1001}),
        ("/search", {"q": "a", "k": "ten"}), ("/search", {"q": "a", "mode": "bm25"}),
        ("/search", {"q": "a", "terms": 500}), ("/search", {"q": "a", "k": 1000, "terms": 5}),
        ("/search", {"q": "a\x00b"}), ("/explain", {"q": "a"}), ("/explain", {"docid": "4983"}),
        ("/explain", {"q": "a", "docid": "no-such-doc"}), ("/explain", {"q": long_query, "docid": "4983"}),
        ("/explain", {"q": "a", "docid": "x" * 5000}), ("/no-such-route", {}),
    ]
    for path, params in cases:
        status, body = get(server.url, path, **params)
        assert 400 <= status < 500, (path, params, status, body)
        assert isinstance(body["detail"], str) and body["detail"], (path, params, body)
    assert "no-such-doc" in get(server.url, "/explain", q="a", docid="no-such-doc")[1]["detail"]
    assert server.proc.poll() is None
    status, body = get(server.url, "/search", q=QUERY, k=3)
    assert status == 200 and len(body["hits"]) == 3


def test_serve_command_errors_are_one_line(server, index, tmp_path):
    port = urllib.parse.urlsplit(server.url).port
    for args, words in ((["--index", index, "--port", port], [f"127.0.0.1:{port}", "cannot listen"]),
                        (["--index", tmp_path / "none", "--port", 0], ["not a dupmae_ir index folder"])):
        proc = run_cli("serve", *args)
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert all(w in lines[0] for w in words), lines


def test_explain_command(server, index, ref):
    _, body = get(server.url, "/search", q=QUERY, k=1, mode="hybrid")
    hit = body["hits"][0]
    run = ["--index", index, "--query", QUERY]
    proc = run_cli("explain", *run, "--docid", hit["docid"], "--top", "5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    explained = get(server.url, "/explain", q=QUERY, docid=hit["docid"])[1]
    assert f"sparse: sum q_t*d_t = {explained['impact_score']} (Lucene's integer score" in table
    totals = {line.split(":")[0]: float(line.split("=")[-1]) for line in table.splitlines()
              if line.startswith(("dense:", "hybrid:"))}
    assert totals["dense"] == pytest.approx(hit["dense_score"], rel=1e-6)  # float32 sums in another order
    assert totals["hybrid"] == pytest.approx(hit["score"], rel=1e-6)
    top = explained["terms"][0]
    rows = [line.split() for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert rows[0][:5] == ["1", top["term"], str(top["query_weight"]), str(top["doc_weight"]), str(top["impact"])]
    assert len(rows) == 5
    proc = run_cli("explain", *run, "--docid", "no-such-doc")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "'no-such-doc'" in lines[0], proc.stderr[-2000:]


# ------------------------------------------------------------------------------------------------
# the page, in a real browser
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> tuple[str, str]:
    """Paths of Debian's chromium and chromedriver; skip when absent, but fail under CI=true (checked
    before the index and the server start)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file()
                                              else None)
    missing = [name for name, path in (("chromium", browser), ("chromium-driver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        reason = f"the real-browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run it, not skip it")
        pytest.skip(reason)
    return browser, driver


def _keep_screenshot(png: Path, target: str) -> None:
    """Copy the screenshot to ``target`` as a 256-colour PNG (docs/serve.png stays small)."""
    from PIL import Image

    Image.open(png).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


@pytest.mark.slow  # a headless Chromium start and page run (~6-8 s)
def test_page_in_a_real_browser(browser, server, ref, tmp_path, monkeypatch):
    browser, driver_path = browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # Selenium Manager must never run (it would download drivers): both paths are given, and it is pointed away
    monkeypatch.setenv("SE_MANAGER_PATH", str(tmp_path / "no-selenium-manager"))
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1500", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'p'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path, log_output=str(tmp_path / "driver.log")),
                              options=options)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: "documents" in d.find_element(By.ID, "status").text)
        box = driver.find_element(By.ID, "q")
        box.send_keys(QUERY)
        box.send_keys(Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit .bar"))
        _, api = get(server.url, "/search", q=QUERY, k=10, mode="hybrid", terms=8)
        cards = driver.find_elements(By.CSS_SELECTOR, "#hits .hit")
        assert [c.get_attribute("data-docid") for c in cards] == [h["docid"] for h in api["hits"]]
        for card, hit in zip(cards, api["hits"]):
            assert card.find_element(By.CSS_SELECTOR, ".title").text == hit["title"]
            bars = card.find_elements(By.CSS_SELECTOR, ".bar")
            assert [b.get_attribute("data-term") for b in bars] == [t["term"] for t in hit["terms"]]
            for bar, term in zip(bars, hit["terms"]):  # expansions are marked as such
                assert ("expansion" in bar.get_attribute("class").split()) == (term["in_text"] is False)
            widths = [b.find_element(By.CSS_SELECTOR, ".fill").size["width"] for b in bars]
            assert widths[0] > 0 and widths == sorted(widths, reverse=True)  # drawn to scale, largest first
            marks = [(m.text, m.get_attribute("class")) for m in card.find_elements(By.CSS_SELECTOR, "mark")]
            spans = [(hit["title"], hit["title_highlights"]), (hit["snippet"], hit["highlights"])]
            top = hit["terms"][0]["score"]  # shaded by contribution relative to the hit's largest term
            assert marks == [(text[a:b], "w3" if w / top >= 0.4 else "w2" if w / top >= 0.15 else "w1")
                             for text, hl in spans for a, b, _, w in hl]
        assert driver.find_elements(By.CSS_SELECTOR, ".bar.expansion .tag")  # the random model expands
        # the full table of one hit, through /explain from the page
        cards[0].find_element(By.CSS_SELECTOR, ".why-foot button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit .all-terms tfoot td"))
        total = cards[0].find_elements(By.CSS_SELECTOR, ".all-terms tfoot td")[3].text
        explained = get(server.url, "/explain", q=QUERY, docid=api["hits"][0]["docid"])[1]
        assert total == str(explained["impact_score"])
        cards[0].find_element(By.CSS_SELECTOR, ".why-foot button").click()  # closed again for the picture
        driver.execute_script("window.scrollTo(0, 0)")
        png = tmp_path / "serve.png"
        assert driver.save_screenshot(str(png)) and png.stat().st_size > 10_000
        if os.environ.get("DUPMAE_SCREENSHOT"):
            _keep_screenshot(png, os.environ["DUPMAE_SCREENSHOT"])
        # nothing but the server was asked for anything, and the page logged no error
        requested = [json.loads(e["message"])["message"]["params"]["request"]["url"]
                     for e in driver.get_log("performance") if '"Network.requestWillBeSent"' in e["message"]]
        web = [u for u in requested if not u.startswith(("chrome:", "data:", "about:"))]  # the browser's own pages
        assert f"{server.url}/static/app.js" in web and f"{server.url}/search?" in " ".join(web)
        assert [u for u in web if not u.startswith(server.url + "/")] == []
        assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        driver.quit()
