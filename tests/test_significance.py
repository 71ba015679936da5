"""Paired significance over queries (dupmae_ir.eval.significance) against computations written out here,
per-query scoring (dupmae_ir.runs.per_query), and the ``python -m dupmae_ir.eval compare`` command."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

# per-query values of two systems on 8 queries; B - A = DELTAS
A = [0.50, 0.20, 0.70, 0.40, 0.90, 0.30, 0.60, 0.10]
DELTAS = [0.25, -0.05, 0.125, 0.5, 0.0, -0.125, 0.375, 0.25]
B = [a + d for a, d in zip(A, DELTAS)]


def test_t_test_and_interval_match_the_textbook_formulas():
    from dupmae_ir.eval.significance import paired_test

    n = len(DELTAS)
    mean = sum(DELTAS) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in DELTAS) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    assert t == pytest.approx(2.15782, abs=1e-5)  # mean 0.165625, sd 0.217098 over these 8 deltas
    res = paired_test(A, B)
    assert (res.n, res.delta, res.t) == (8, pytest.approx(mean), pytest.approx(t))
    assert (res.mean_a, res.mean_b) == (pytest.approx(sum(A) / n), pytest.approx(sum(B) / n))
    # two-sided p and the 95% interval from Student's t with 7 degrees of freedom (t_0.975,7 = 2.364624)
    assert res.p_t == pytest.approx(0.067826, abs=1e-6)  # Simpson integration of the t(7) density
    half = 2.364624 * sd / math.sqrt(n)
    assert (res.ci_low, res.ci_high) == (pytest.approx(mean - half, abs=1e-6), pytest.approx(mean + half, abs=1e-6))
    # B against A is A against B with the signs turned
    back = paired_test(B, A)
    assert (back.delta, back.t, back.p_t, back.p_rand) == (pytest.approx(-mean), pytest.approx(-t),
                                                          pytest.approx(res.p_t), pytest.approx(res.p_rand))


def test_randomisation_test_is_the_exact_enumeration_of_sign_flips():
    from dupmae_ir.eval.significance import paired_test

    observed = abs(sum(DELTAS))
    flips = list(itertools.product((1, -1), repeat=len(DELTAS)))
    extreme = sum(abs(sum(s * d for s, d in zip(signs, DELTAS))) >= observed - 1e-12 for signs in flips)
    assert len(flips) == 256 and extreme == 24  # 24 of the 256 sign patterns are at least as far from 0
    res = paired_test(A, B)
    assert res.exact and res.p_rand == pytest.approx(extreme / len(flips))
    # above 2**n resamples it is Monte Carlo, near the exact value
    many = [0.1 * ((i * 7) % 5) - 0.15 for i in range(16)]
    flips16 = sum(abs(sum(s * d for s, d in zip(signs, many))) >= abs(sum(many)) - 1e-12
                  for signs in itertools.product((1, -1), repeat=16)) / 2 ** 16
    approx = paired_test([0.0] * 16, many, n_resamples=4000)
    assert not approx.exact and approx.p_rand == pytest.approx(flips16, abs=0.03)
    assert paired_test([0.0] * 16, many, n_resamples=4000).p_rand == approx.p_rand  # seeded


def test_degenerate_pairs():
    from dupmae_ir.eval.significance import format_p, paired_test

    same = paired_test([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert (same.delta, same.p_t, same.p_rand, same.ci_low, same.ci_high) == (0.0, 1.0, 1.0, 0.0, 0.0)
    shifted = paired_test([0.1, 0.2, 0.3], [0.2, 0.3, 0.4])
    assert shifted.delta == pytest.approx(0.1) and shifted.p_t == 0.0 and shifted.p_rand == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([0.1], [0.2])
    with pytest.raises(ValueError, match="one length"):
        paired_test([0.1, 0.2], [0.2])
    assert (format_p(0.0765), format_p(3e-6), format_p(float("nan"))) == ("0.0765", "<0.0001", "-")
    assert paired_test(A, B).summary().startswith("Δ +0.1656 [")


def test_per_query_scores_missing_queries_as_zero():
    from dupmae_ir.eval.significance import compare_runs
    from dupmae_ir.runs import per_query

    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 1}}
    a = {"q1": [("d1", 2.0), ("x", 1.0)], "q2": [("x", 2.0), ("d2", 1.0)], "q5": [("d1", 1.0)]}
    b = {"q1": [("d1", 2.0)], "q2": [("d2", 2.0)], "q3": [("d3", 1.0)]}
    assert per_query(a, qrels, "nDCG@10") == {"q1": 1.0, "q2": pytest.approx(1 / math.log2(3))}
    assert per_query(a, qrels, "RR", ["q1", "q2", "q3", "q5"]) == {"q1": 1.0, "q2": 0.5, "q3": 0.0}
    res = compare_runs(a, b, qrels, "RR")  # q1, q2, q3 (q4 in neither run, q5 unjudged)
    assert res.n == 3 and (res.mean_a, res.mean_b) == (pytest.approx(0.5), pytest.approx(1.0))


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "dupmae_ir.eval", "compare", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_compare_command(tmp_path):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    # A: the relevant document at rank 2 on q0-q6, q7 not run; B: rank 1 on q0-q5, q6 not run, q7 missed,
    # and q9, which has no judgements
    a.write_text("".join(f"q{i} Q0 x 1 2.0 a\nq{i} Q0 d{i} 2 1.0 a\n" for i in range(7)))
    b.write_text("".join(f"q{i} Q0 d{i} 1 2.0 b\n" for i in range(6)) + "q7 Q0 x 1 1.0 b\nq9 Q0 d1 1 1.0 b\n")
    proc = _cli(a, b, "--qrels", qrels, "--metric", "RR", "nDCG@10")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "queries: 8 judged in either run (missing from A: 1, from B: 1, scored 0 there)" in out
    assert "run queries without judgements: 1" in out
    from dupmae_ir.eval.significance import paired_test

    expected = paired_test([0.5] * 7 + [0.0], [1.0] * 6 + [0.0, 0.0])  # RR per query, q0..q7
    row = next(line for line in out.splitlines() if line.startswith("| RR |"))
    assert row.split(" | ")[1:4] == ["0.4375", "0.7500", f"{expected.delta:+.4f}"]
    assert f"{expected.p_t:.3g}" in row and "(exact)" in row
    assert any(line.startswith("| nDCG@10 |") for line in out.splitlines())
    # bad input: one line naming the file or flag, status 2
    for args, where in (((a, tmp_path / "none.trec", "--qrels", qrels), "none.trec: run file not found"),
                        ((a, b, "--qrels", a), "a.trec:1: expected 'qid docid rel'"),
                        ((a, b, "--qrels", qrels, "--metric", "nDCG@x"), "--metric: 'nDCG@x'"),
                        ((a, qrels, "--qrels", qrels), "qrels.tsv:1: expected 'qid Q0 docid rank score tag'")):
        proc = _cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and where in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    other = tmp_path / "other.tsv"
    other.write_text("z1\td1\t1\n")
    proc = _cli(a, b, "--qrels", other)
    assert proc.returncode == 2 and "0 judged queries are in the runs" in proc.stderr
