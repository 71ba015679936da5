"""Exhaustive SciFact-test runs of a checkpoint (ExactRetriever, the recipe's evaluation) -> TREC files."""
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, os.getcwd())
from dupmae_ir.data import doc_text, resolve
from dupmae_ir.modeling.retriever import DupMAERetriever
from dupmae_ir.search import write_trec
from dupmae_ir.train.mining import ExactRetriever
model, outdir, lengths = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
limit = int(os.environ.get("EV_LIMIT", "0")) or None
name = os.path.basename(model.rstrip("/"))
coll = resolve("default"); Q = coll.queries("test")
docs = {}
for d in coll.iter_docs():
    docs[d.id] = doc_text(d)
    if limit and len(docs) >= limit: break
m, tok = DupMAERetriever.from_pretrained(model)
os.makedirs(outdir, exist_ok=True)
for L in lengths:
    t = time.time()
    r = ExactRetriever(m, tok, doc_max_length=L, query_max_length=32)
    r.index(list(docs), list(docs.values()), progress=False)
    runs = r.search(Q, k=100)
    for mode, run in runs.items():
        write_trec(f"{outdir}/{name}.L{L}.{mode}.trec", run, f"{name}-L{L}-{mode}")
    print(json.dumps({"model": name, "L": L, "device": str(r.device), "seconds": round(time.time() - t, 1)}), flush=True)
