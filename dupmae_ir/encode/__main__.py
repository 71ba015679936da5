"""``python -m dupmae_ir.encode``: encode a corpus into a FAISS index and a Lucene impact index in one
pass, pre-encode topics, or merge shard folders (``python -m dupmae_ir.encode merge``)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cli import (
    CommandParser,
    HelpFormatter,
    add_debug_flag,
    add_dense_index_args,
    add_encoder_args,
    add_length_args,
    dense_index_spec,
    nonnegative_int,
    positive_int,
)
from ..data.readers import MAX_LINE_BYTES
from ..errors import UserError, run_command
from ..index import INDEX_OUTPUT, QUERIES_OUTPUT, SHARD_OUTPUT
from .corpus import encode_corpus, merge_shards
from .queries import encode_queries


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m dupmae_ir.encode",
        description="Encode a corpus with DupMAE into a FAISS index (dense [CLS]) and a Lucene impact index "
                    "(bag-of-words weights) in one pass, and/or pre-encode topics for dupmae_ir.search and stock "
                    "Pyserini. `python -m dupmae_ir.encode merge --help` merges shard folders.",
        formatter_class=HelpFormatter)
    io = parser.add_argument_group("input / output")
    io.add_argument("--corpus", help="collection: 'default' (bundled SciFact), an ir_datasets id "
                                     "(msmarco-passage, beir/...), a BEIR folder or a JSONL collection")
    io.add_argument("--topics", "--queries", dest="topics",
                    help="topics to pre-encode: a collection name/folder (with --split) or a TSV/JSONL topics file")
    io.add_argument("--split", default=None,
                    help="topic split for --topics (default: the collection's evaluation split)")
    io.add_argument("--data-dir", default=None,
                    help="folder of local BEIR collections tried first for --corpus/--topics")
    io.add_argument("--output", required=True, help="output folder (indexes; or the encoded topics when only --topics)")
    io.add_argument("--topics-output", "--queries-output", dest="topics_output", default=None,
                    help="folder for encoded topics (default: OUTPUT/queries with --corpus, else OUTPUT)")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an earlier output of this command at --output "
                         "(never a folder dupmae_ir did not write)")
    io.add_argument("--max-doc-bytes", type=positive_int, default=MAX_LINE_BYTES,
                    help="longest document read, in bytes of its JSONL line after decompression (characters for "
                         "ir_datasets ids); a longer one is an error naming its file and line")
    add_encoder_args(parser)
    add_length_args(parser)
    ix = parser.add_argument_group("indexes")
    only = ix.add_mutually_exclusive_group()
    only.add_argument("--dense-only", action="store_true", help="write only the FAISS index")
    only.add_argument("--impact-only", action="store_true", help="write only the Lucene impact index")
    add_dense_index_args(ix)
    ix.add_argument("--threads", type=positive_int, default=None,
                    help="Anserini indexing threads (default: cores, max 8)")
    sc = parser.add_argument_group("scale")
    sc.add_argument("--chunk-size", type=positive_int, default=4096, help="documents per resumable chunk")
    sc.add_argument("--shard-id", type=nonnegative_int, default=0,
                    help="this shard (0-based); with --shard-num > 1 writes a shard folder for `merge`")
    sc.add_argument("--shard-num", type=positive_int, default=1, help="number of shards")
    sc.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_debug_flag(parser)
    return parser


def build_merge_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m dupmae_ir.encode merge",
        description="Merge the shard folders of `--shard-id/--shard-num` runs into one output folder "
                    "(FAISS + Lucene impact index, corpus order), identical to an unsharded run.")
    parser.add_argument("--inputs", nargs="+", required=True, help="shard folders")
    parser.add_argument("--output", required=True, help="output folder")
    add_dense_index_args(parser)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier index at --output")
    add_debug_flag(parser)
    return parser


def tokenizer_parallelism(device: str) -> str:
    """Default of ``TOKENIZERS_PARALLELISM`` for an encoding run on ``device`` (a user's setting wins):
    on a GPU the tokeniser's threads keep the device fed; on a CPU they would compete with torch's."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return "true" if str(device).startswith("cuda") else "false"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["merge"]:
        args = build_merge_parser().parse_args(argv[1:])
        out = merge_shards(args.inputs, args.output, faiss=dense_index_spec(args), threads=args.threads,
                           overwrite=args.overwrite)
        print(out)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.corpus and not args.topics:
        parser.error("give --corpus (to build indexes) and/or --topics (to pre-encode topics)")
    if args.shard_id >= args.shard_num:
        raise UserError("--shard-id", f"{args.shard_id} is out of range for --shard-num {args.shard_num}",
                        f"pass a shard id in 0..{args.shard_num - 1}")
    from ..outputs import absolute, check_output_dir
    from .distributed import encode_corpus_distributed, world

    if world() and (args.shard_num > 1 or args.shard_id):  # torchrun already shards by rank
        raise UserError("--shard-num", "cannot be combined with torchrun (each rank takes its share itself)",
                        "drop --shard-id/--shard-num under torchrun, or run one plain process per shard")

    # every input and output is checked before a model loads
    output = absolute(args.output)
    corpus = None
    if args.corpus:
        from dataclasses import replace

        from ..data import resolve

        corpus = replace(resolve(args.corpus, data_dir=args.data_dir), max_line_bytes=args.max_doc_bytes)
        check_output_dir(output, SHARD_OUTPUT if args.shard_num > 1 else INDEX_OUTPUT, args.overwrite)
    queries = qout = None
    if args.topics:
        from ..data import resolve

        queries = resolve(args.topics, data_dir=args.data_dir).queries(args.split)
        qout = absolute(args.topics_output) if args.topics_output else (output / "queries" if args.corpus else output)
        if not (args.corpus and output in qout.parents):  # inside a new index folder it cannot exist yet
            check_output_dir(qout, QUERIES_OUTPUT, args.overwrite)
    from ..modeling.backbone import check_checkpoint

    check_checkpoint(args.encoder, doc_max_length=args.doc_max_length, query_max_length=args.query_max_length)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", tokenizer_parallelism(args.device))

    if args.corpus and world() and args.shard_num == 1:  # torchrun: each process a share, rank 0 the indexes
        print(encode_corpus_distributed(corpus, output, encoder=args.encoder, batch_size=args.batch_size,
                                        dtype=args.dtype, dense=not args.impact_only, impact=not args.dense_only,
                                        faiss=dense_index_spec(args), device=args.device, chunk_size=args.chunk_size,
                                        threads=args.threads, data_dir=args.data_dir, progress=not args.no_progress,
                                        overwrite=args.overwrite,
                                        doc_max_length=args.doc_max_length))
    elif args.corpus:
        out = encode_corpus(corpus, output, encoder=args.encoder, dtype=args.dtype, device=args.device,
                            batch_size=args.batch_size, dense=not args.impact_only, impact=not args.dense_only,
                            faiss=dense_index_spec(args), chunk_size=args.chunk_size, shard_id=args.shard_id,
                            shard_num=args.shard_num, threads=args.threads, data_dir=args.data_dir,
                            progress=not args.no_progress, overwrite=args.overwrite, doc_max_length=args.doc_max_length)
        print(out)
    if queries is not None and (world() is None or world()[0] == 0):  # under torchrun rank 0 encodes the topics
        # queries are cheap: always the fp32 reference
        device = "cpu" if args.device == "auto" else args.device
        print(encode_queries(queries, args.encoder, qout, batch_size=args.batch_size, dtype="fp32", device=device,
                             overwrite=args.overwrite, query_max_length=args.query_max_length))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
