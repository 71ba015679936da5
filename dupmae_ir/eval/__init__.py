"""Evaluate DupMAE on BEIR and MS MARCO: ``python -m dupmae_ir.eval beir`` / ``... msmarco``.

Library: :class:`Evaluator` with :class:`EvalSettings` (:mod:`.suites`), the report and plots
(:mod:`.report`); the command line is ``__main__``.

For each collection: encode it (``dupmae_ir.encode``; an index that already exists is reused), search
dense, impact and hybrid (:mod:`dupmae_ir.search`), run the BM25 baseline (:mod:`dupmae_ir.bm25`),
and score every run with ir-measures. Results go under ``eval/<suite>/<encoder>/``:

- ``results/<collection>.json``: one file per finished collection (an interrupted eval resumes from
  them; ``--force-search`` searches and scores again, still reusing the indexes);
- ``report.md`` / ``report.json``: the table beside the paper's published numbers and BM25;
- ``plot.png`` (all collections) and ``plots/<collection>.png`` (the systems on one collection).

BEIR conventions followed: the test split (webis-touche2020 v2); cqadupstack is the mean of its 12
forums (reported only when all 12 are scored); on ArguAna and Quora a hit whose docid equals the query
id is dropped before scoring (BEIR's ``ignore_identical_ids``), for every system including BM25.
MS MARCO: dev small (RR@10, R@1000), TREC DL19 and DL20 (nDCG@10).

Data come from ir_datasets ids, or with ``--data-dir`` from local folders only
(``<data-dir>/<name>`` in BEIR layout; ``<data-dir>/msmarco-passage`` for ``msmarco``): a collection
whose folder or documents are absent is reported as missing, never fetched and never a crash.
"""
from .report import beir_rows, write_plots, write_report
from .suites import (
                     BEIR_MEASURES,
                     DROP_QUERY_ID_DATASETS,
                     MSMARCO_MEASURES,
                     PAPER_BEIR,
                     EvalSettings,
                     Evaluator,
                     Unit,
                     beir_units,
                     msmarco_units,
)

__all__ = ["BEIR_MEASURES", "DROP_QUERY_ID_DATASETS", "MSMARCO_MEASURES", "PAPER_BEIR", "EvalSettings", "Evaluator",
           "Unit", "beir_rows", "beir_units", "msmarco_units", "write_plots", "write_report"]
