"""Report tables show a protocol that does not apply to a method as 'n/a' with a footnote
giving the reason, never as a number and never dropped."""

from __future__ import annotations

from typing import Any

from metabn_bench.reporting.report import build_report, format_report, summary_table
from tests.report_fixtures import make_rows

REASON = ("protocol 'bn' is not applicable to this model: it has no BatchNorm2d layers, so no "
          "batch statistics to adapt (a batch-independent norm such as gn); evaluate it with 'none'")


def na_rows(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `bn` rows `evaluate` writes for a gn run: the cells of its `none` rows, no error."""
    return [{**r, "protocol": "bn", "errors": None, "error": None, "per_image": False,
             "applicable": False, "reason": REASON} for r in measured]


def test_not_applicable_rows_show_n_a_with_the_reason_as_footnote() -> None:
    rows, vectors = make_rows(n=50, seeds=(0,), protocols=("none", "bn"))
    gn, _ = make_rows(n=50, seeds=(0,), methods=("cutout",))
    gn = [{**r, "method": "gn", "run_id": "gn-s0"} for r in gn]
    report = build_report(rows + gn, {}, vectors=vectors, resamples=50, not_applicable=na_rows(gn))
    # No metric uses the n/a rows; the pair is listed once, with its reason.
    assert {(r["method"], r["protocol"]) for r in report.rows} == {
        ("vanilla", "none"), ("vanilla", "bn"), ("cutout", "none"), ("cutout", "bn"), ("gn", "none")}
    assert report.summary["not_applicable"] == [
        {"method": "gn", "protocol": "bn", "reason": REASON, "runs": 1}]
    table = summary_table(report.rows, not_applicable=report.not_applicable)
    line = table[(table["method"] == "gn") & (table["protocol"] == "bn")].iloc[0]
    assert line["mCE (%)"] == line["clean error (%)"] == "n/a [1]"
    text = format_report(report, "markdown")
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    gn_bn = [ln for ln in summary.splitlines() if ln.startswith("| gn ") and "| bn " in ln]
    assert len(gn_bn) == 1 and gn_bn[0].count("n/a [1]") == 5
    assert f"[1] n/a: {REASON}" in summary
    per_protocol = text.split("## Per test-time protocol: mCE (%)", 1)[1].split("\n## ", 1)[0]
    assert any(ln.startswith("| gn ") and "n/a [1]" in ln for ln in per_protocol.splitlines())


def test_a_measured_pair_is_never_also_n_a() -> None:
    rows, vectors = make_rows(n=50, seeds=(0,), protocols=("none", "bn"))
    report = build_report(rows, {}, vectors=vectors, resamples=50,
                          not_applicable=na_rows([r for r in rows if r["method"] == "vanilla"]))
    assert report.not_applicable == []
