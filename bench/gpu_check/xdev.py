"""Encode the first 16 SciFact docs with DupMAEEncoder fp32 on a device -> npz (dense, bow weights)."""
import os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1"); sys.path.insert(0, os.getcwd())
import numpy as np
from dupmae_ir.data import doc_text, resolve
from dupmae_ir.encoder import DupMAEEncoder
model, device, out = sys.argv[1:4]
texts = [doc_text(d) for _, d in zip(range(16), resolve("default").iter_docs())]
enc = DupMAEEncoder(model, device=device, dtype="fp32")
b = enc.encode_docs(texts, keep_weights=True, batch_size=8)
np.savez_compressed(out, dense=b.dense, weights=b.weights.numpy())
print("xdev", device, b.dense.shape, float(b.weights.abs().sum()))
