"""Argument parsing shared by the ``python -m dupmae_ir.X`` commands: one flag vocabulary, one home.

- :class:`ArgumentParser`: ``transformers.HfArgumentParser`` (dataclass fields become flags, spelled
  ``--max-seq-length`` or ``--max_seq_length``) with each field in the ``--help`` section named by its
  ``metadata["group"]``; used by ``pretrain`` and ``finetune``, which :func:`train_main` runs.
- Argument groups for the retrieval commands, named as Pyserini names them: :func:`add_encoder_args`
  (``--encoder --batch-size --dtype --device``), :func:`add_search_args` (``--mode --hits --batch-size
  --threads --min-idf``), :func:`add_fusion_args` (``--fusion --alpha --weight-on-dense --depth --rrf-k``),
  :func:`add_dense_index_args` (``--faiss`` and its build parameters: ``encode`` and ``eval``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import types

from .errors import UserError, add_debug_flag
from .numbers import (  # noqa: F401 - the argparse number types, re-exported for the commands
    finite_float,
    fraction,
    max_length,
    nonnegative_float,
    nonnegative_int,
    number,
    port_number,
    positive_float,
    positive_int,
    unit_float,
)
from .precision import DTYPES  # torch-free: --help stays cheap
from .runs import FUSIONS, HYBRID_BM25, MODES, FusionConfig


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` to a flag's help unless the help already names its default or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors raise :class:`UserError` (one line, exit 2 under
    ``run_command``) instead of printing the usage block."""

    def error(self, message):
        where, sep, what = message.partition(": ") if message.startswith("argument ") else ("", "", message)
        raise UserError(where[len("argument "):] if sep else self.prog, what if sep else message,
                        f"see `{self.prog} --help`")


def _hf_parser():
    from transformers import HfArgumentParser

    class ArgumentParser(HfArgumentParser):
        """``HfArgumentParser`` with ``--help`` sections from each field's ``metadata["group"]``."""

        error = CommandParser.error

        def _add_dataclass_arguments(self, dtype):
            import typing

            hints = typing.get_type_hints(dtype)
            groups: dict[str, argparse._ArgumentGroup] = {}
            for f in dataclasses.fields(dtype):
                if not f.init:
                    continue
                title = f.metadata.get("group", "options")
                group = groups.get(title) or groups.setdefault(title, self.add_argument_group(title))
                f = copy.copy(f)
                f.type = hints[f.name]
                f.metadata = types.MappingProxyType({k: v for k, v in f.metadata.items() if k != "group"})
                self._parse_dataclass_field(group, f)
                rule = getattr(dtype, "number_rules", {}).get(f.name)
                for action in self._actions if rule else ():
                    if action.dest == f.name and action.type in (int, float):
                        action.type = rule  # a number out of range: one line naming the flag and the range
            add_debug_flag(self)

    return ArgumentParser


def ArgumentParser(dataclass_type, **kwargs):  # noqa: N802 - a class factory (transformers is imported lazily)
    """An ``HfArgumentParser`` over ``dataclass_type`` with sectioned ``--help`` and ``--debug``."""
    return _hf_parser()(dataclass_type, **{"formatter_class": HelpFormatter, **kwargs})


def train_main(parser, run, what: str, argv: list[str] | None) -> int:
    """``pretrain`` / ``finetune``: parse ``argv`` into the parser's dataclass (its own checks become one
    line), log at INFO, ``run(args)`` and print the checkpoint it wrote as ``{what} checkpoint: PATH``."""
    import logging

    try:
        args = parser.parse_args_into_dataclasses(argv)[0]  # [1]: --debug (run_command reads it)
    except ValueError as e:  # the dataclass's own checks
        raise UserError("arguments", str(e), "see --help") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"{what} checkpoint: {run(args)}")
    return 0


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def add_encoder_args(parser: argparse.ArgumentParser, batch_size: int = 32) -> None:
    """``--encoder --batch-size --dtype --device`` (``encode``)."""
    g = parser.add_argument_group("encoder")
    g.add_argument("--encoder", default="default",
                   help="DupMAE checkpoint folder (HF masked LM + dupmae_config.json), or 'default' (MiniLM-L6)")
    g.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help="texts per forward pass (length-sorted, dynamic padding)")
    g.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="auto: bf16/fp16 on GPUs, bf16 on CPUs with native bf16 instructions (AVX512-BF16/AMX), "
                        "else fp32 (decided from the hardware, never from a timing); int8: dynamic int8 "
                        "quantisation of every linear layer (CPU; costs quality); int8-head: of the MLM head only "
                        "(CPU; dense vectors exact)")
    g.add_argument("--device", default="auto",
                   help="cpu, cuda[:i], or auto: the GPU when there is one (cuda:LOCAL_RANK under torchrun), else cpu")


def add_length_args(parser: argparse.ArgumentParser, query: bool = True, doc: bool = True,
                    note: str = "default: the checkpoint's") -> None:
    """``--query-max-length`` / ``--doc-max-length``: word pieces per text at use time (recorded in provenance)."""
    g = parser.add_argument_group("lengths")
    if query:
        g.add_argument("--query-max-length", type=max_length, default=None,
                       help=f"word pieces per query, [CLS] and [SEP] included ({note})")
    if doc:
        g.add_argument("--doc-max-length", type=max_length, default=None,
                       help=f"word pieces per document, fixed in the index at encoding ({note})")


def add_search_args(parser: argparse.ArgumentParser, modes_default=("hybrid",),
                    modes=MODES) -> argparse._ArgumentGroup:
    """``--mode --hits --batch-size --threads --min-idf`` (``search`` and ``eval``); returns the group."""
    g = parser.add_argument_group("search")
    g.add_argument("--mode", "--modes", dest="mode", nargs="*", choices=modes, default=list(modes_default),
                   help="what to retrieve with: dense (FAISS), impact (Lucene), hybrid (both, fused)"
                        + ("; hybrid+bm25 (the hybrid run and a BM25 run, min-max normalised and summed: stock "
                           "`pyserini.fusion --method normalize`; needs --bm25-index)" if HYBRID_BM25 in modes else "")
                        + "; several modes share one query-encoding pass and write one run each")
    g.add_argument("--hits", type=positive_int, default=1000, help="hits per query in the run")
    g.add_argument("--batch-size", type=positive_int, default=64, help="queries encoded and searched per batch")
    g.add_argument("--threads", type=positive_int, default=default_threads(),
                   help="search threads for FAISS and Lucene")
    g.add_argument("--min-idf", type=finite_float, default=-1,
                   help="impact side: drop query tokens with idf <= this (-1 keeps all: the exact dot product; "
                        "Pyserini's default 0 drops tokens present in every document)")
    add_dense_knob_args(g)
    return g


def add_dense_knob_args(group) -> None:
    """``--ef-search --nprobe``: FAISS search-time knobs of HNSW and IVF indexes (``search``, ``eval``, ``serve``)."""
    group.add_argument("--ef-search", type=positive_int, default=None,
                       help="HNSW indexes: candidates kept while walking the graph; more is slower and closer to "
                            "flat (default 128; FAISS's own 16 loses a fifth of the flat top-100)")
    group.add_argument("--nprobe", type=positive_int, default=None,
                       help="IVF indexes (ivfpq): lists searched per query, of nlist (default 32)")


def add_dense_index_args(group) -> None:
    """``--faiss --hnsw-m --ef-construction --pq-m --nlist``: the FAISS index type and its build parameters
    (``encode``, ``encode merge``, ``eval``; docs/encoding.md has the table of types by corpus size)."""
    from .dense_index import FAISS_KINDS

    group.add_argument("--faiss", default="flat", choices=FAISS_KINDS,
                       help="FAISS index type, inner product: flat (exact), flat-int8 (8-bit scalar quantised, a "
                            "quarter of the memory), hnsw / hnsw-int8 (graph: fast at 1M+), ivfpq (compressed, for "
                            "corpora whose vectors do not fit in memory), pq")
    group.add_argument("--hnsw-m", type=positive_int, default=32, help="HNSW graph degree (hnsw, hnsw-int8)")
    group.add_argument("--ef-construction", type=positive_int, default=200, help="HNSW build beam (hnsw, hnsw-int8)")
    group.add_argument("--pq-m", type=positive_int, default=None,
                       help="PQ sub-quantisers of 8 bits (ivfpq, pq; default dim/4; must divide dim)")
    group.add_argument("--nlist", type=positive_int, default=None,
                       help="IVF lists (ivfpq; default 4*sqrt(docs), <= docs/39)")


def dense_index_spec(args):
    """The :class:`~dupmae_ir.dense_index.DenseIndexSpec` given by :func:`add_dense_index_args`'s flags."""
    from .dense_index import DenseIndexSpec

    return DenseIndexSpec(args.faiss, hnsw_m=args.hnsw_m, ef_construction=args.ef_construction, pq_m=args.pq_m,
                          nlist=args.nlist)


def add_fusion_args(parser: argparse.ArgumentParser) -> None:
    """``--fusion --alpha --weight-on-dense --depth --rrf-k`` (hybrid mode of ``search`` and ``eval``)."""
    f = parser.add_argument_group("fusion (hybrid mode)")
    f.add_argument("--fusion", choices=FUSIONS, default="sum",
                   help="sum: alpha*sparse + dense (DupMAE's score with the default alpha); normalized: Pyserini's "
                        "--normalization then alpha*sparse + dense; rrf: reciprocal-rank fusion")
    f.add_argument("--alpha", type=finite_float, default=None,
                   help="sparse weight (default: 1/(s_q*s_d) from the index for sum, 1.0 for normalized)")
    f.add_argument("--weight-on-dense", action="store_true", help="score = sparse + alpha*dense instead")
    f.add_argument("--depth", type=positive_int, default=None,
                   help="hits taken from each side before fusion (Pyserini's fusion --hits; default --hits)")
    f.add_argument("--rrf-k", type=nonnegative_int, default=60, help="RRF constant k")


def fusion_from_args(args) -> FusionConfig:
    return FusionConfig(args.fusion, args.alpha, args.weight_on_dense, args.rrf_k)
