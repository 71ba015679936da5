"""Time the stages of DupMAEEncoder (tokenise / forward / top-k + quantise / impact dicts) per dtype,
BoW pooling path (per-text packed vs padded batch) and batch size:  python prof.py MODEL DEVICE N DTYPES"""
import json, os, sys, time
sys.path.insert(0, os.getcwd()); os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["TOKENIZERS_PARALLELISM"] = "false"
import torch
from dupmae_ir.data import doc_text, resolve
from dupmae_ir.encoder import DupMAEEncoder
from dupmae_ir.modeling.bow import quantize, to_impact_dicts, topk_sparsify
model, dev, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [doc_text(d) for _, d in zip(range(n), resolve("default").iter_docs())]
def sync():
    if dev.startswith("cuda"): torch.cuda.synchronize()
for dtype in sys.argv[4].split(","):
    enc = DupMAEEncoder(model, device=dev, dtype=dtype)
    for packed in (True, False):
        for bs in (32, 128):
            enc.model.packed_pool = packed
            enc.encode_docs(texts[:64], batch_size=bs)
            t = dict(tok=0.0, fwd=0.0, topk=0.0, dicts=0.0)
            sync(); a = time.perf_counter(); ids = enc.tokenize(texts, 256); t["tok"] = time.perf_counter() - a
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            for s in range(0, len(order), bs):
                batch = [ids[i] for i in order[s:s + bs]]
                a = time.perf_counter(); d, bow = enc.forward_ids(batch); sync(); b = time.perf_counter(); t["fwd"] += b - a
                q = quantize(topk_sparsify(bow, enc.config.doc_topk), enc.config.doc_scale).cpu(); d.cpu(); c = time.perf_counter(); t["topk"] += c - b
                to_impact_dicts(q, enc.vocab); t["dicts"] += time.perf_counter() - c
            tot = sum(t.values())
            print(json.dumps({"dtype": dtype, "packed": packed, "bs": bs, "docs_per_s": round(n / tot, 1), **{k: round(v, 2) for k, v in t.items()}}), flush=True)
