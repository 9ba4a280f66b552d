"""The sections of a full report (report.md, `report --format markdown|latex|html`), in order."""

from __future__ import annotations

from typing import Any

from metabn_bench.corruptions import names as cnames
from metabn_bench.reporting import not_applicable as na
from metabn_bench.reporting import stats
from metabn_bench.reporting.batch_sizes import batch_size_view
from metabn_bench.reporting.calibration import calibration_view
from metabn_bench.reporting.costs import devices
from metabn_bench.reporting.document import Section
from metabn_bench.reporting.model import Report
from metabn_bench.reporting.published import load_published
from metabn_bench.reporting.views import (
    comparison_view,
    corruption_view,
    delta_view,
    ledger_view,
    missing_view,
    protocol_view,
    provenance_bullets,
    published_view,
    severity_view,
    summary_view,
    warnings,
)


def report_sections(report: Report, images: list[tuple[str, str]]) -> list[Section]:
    """Provenance, caveats, summary, comparison, per-protocol views, reported, missing, plots."""
    summary = report.summary
    rows, frame, baseline = report.rows, report.frame, report.baseline
    na_entries = report.not_applicable
    notes = na.footnotes(na_entries)
    reference = summary.get("baseline", {}).get("normalization_reference")
    sections = [Section("Provenance", bullets=provenance_bullets(summary["provenance"], frame))]
    caveats = warnings(rows, frame)
    if caveats:
        sections.append(Section("Read first", bullets=caveats))
    sections.append(Section(
        "Summary", table=summary_view(rows, reference, na_entries, baseline),
        paragraphs=["Errors in %, mean ± std over seeds (std shown for 2 or more seeds). "
                    "mCE is the CIFAR convention (unnormalised mean over the listed common "
                    "corruptions x 5 severities); the normalised and relative mCE follow "
                    "ImageNet-C with the reference named in the header (100 = the reference). "
                    + _cost_note(summary, baseline),
                    *notes]))
    sections.append(_comparison(report, baseline))
    if summary.get("ledger"):
        sections.append(_ledger(summary["ledger"]))
    calib = calibration_view(frame)
    if not calib.empty:
        sections.append(Section("Calibration under shift", table=calib, paragraphs=[
            "Expected calibration error (%, 15 equal-width confidence bins, Guo et al. 2017), "
            "negative log-likelihood (nats) and Brier score, each the mean over a run's common "
            "corruption cells (15 x 5 on a full set), then mean ± std over seeds; clean ECE for "
            "reference."]))
    sweep = batch_size_view(frame)
    if not sweep.empty:
        sections.append(Section("Error vs test batch size", table=sweep, paragraphs=[
            "From a batch-size sweep (evaluate --batch-sizes): per run the mean error (%) over its "
            "common corruption cells at each test batch size, then the mean over seeds. Below, "
            "each batch size is its own protocol (label ending in batch=B); sizes are never "
            "averaged together."]))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    if len({*protocols, *(e["protocol"] for e in na_entries)}) > 1:
        for key, title in (("mce", "mCE (%)"), ("severity5", "severity-5 error (%)"),
                           ("clean_error", "clean error (%)")):
            sections.append(Section(f"Per test-time protocol: {title}",
                                    table=protocol_view(rows, key, na_entries), paragraphs=notes))
    for protocol in protocols:
        sections += _protocol_sections(report, protocol)
    sections.append(_reported(report))
    sections.append(_missing(report))
    if images:
        sections.append(Section("Plots", images=images))
    sections.append(Section("Definitions",
                            bullets=[f"{k}: {v}" for k, v in summary["definitions"].items()]))
    return sections


def _cost_note(summary: dict[str, Any], baseline: str) -> str:
    record = summary.get("training") or []
    if not record:
        return (f"train cost (x {baseline}): n/a, no run of this report has a training record "
                "(metrics.jsonl) here.")
    return (f"train cost (x {baseline}): the method's median training time over its seeds "
            f"divided by {baseline}'s, measured while the runs trained (CPU = process CPU "
            "seconds, used when every run of both rows has them and trained on a CPU; wall = "
            f"wall seconds otherwise); trained on {devices(record)}; n/a when a record is "
            "missing. Per-run totals: 'training' in summary.json.")


def _ledger(record: dict[str, Any]) -> Section:
    rules = record["rules"]
    return Section("Reproduction ledger", table=ledger_view(record["claims"]), paragraphs=[
        "Each published claim with a CPU-scale analogue, tested on this table's paired mCE "
        "deltas (points, first minus second, protocol none unless stated in brackets) and "
        "their two-stage (seeds, then images) 95% intervals [lo, hi]. The numbers of the "
        "published column come from another regime (WRN-40-2, 100 epochs, 10,000 images); "
        "the ledger tests the ordering, not the values. Rules, with a margin of "
        f"{record['margin_points']:g} point of mCE (our choice) for 'level':"],
        bullets=[f"{name}: {text}" for name, text in rules.items()]
        + ["not tested: a method of the claim has no runs or no per-image results here"])


def _comparison(report: Report, baseline: str) -> Section:
    desc = stats.describe(report.summary["statistics"]["resamples"])
    text = (f"Deltas are method minus {baseline} under the same protocol, in points (negative = "
            f"fewer errors). The paired interval is a {desc['method']}, "
            f"{desc['resamples']} resamples, seed {desc['seed']}: it measures which test images "
            "were drawn, not seed-to-seed variation. The 'seeds + images' interval is a "
            "two-stage (hierarchical) bootstrap of the same delta: seeds with replacement "
            "(paired by seed value), then test images; it is the one to read when asking "
            "whether a difference would survive retraining, and both are shown because their "
            "gap says how much of the uncertainty is seed variance. With 2 or 3 seeds the "
            "seed stage is crude and underestimates seed variance (Davison & Hinkley 1997, "
            "sec. 3.8). The per-seed deltas are the paired mCE deltas of each seed's two runs. "
            "win/tie/loss counts common corruptions whose image-only paired interval lies "
            "below 0 / contains 0 / lies above 0.")
    table = comparison_view(report.rows, report.comparisons, baseline)
    if table.empty:
        return Section(f"Comparison with {baseline}",
                       paragraphs=[f"No method other than {baseline} to compare."])
    return Section(f"Comparison with {baseline}", paragraphs=[text], table=table)


def _protocol_sections(report: Report, protocol: str) -> list[Section]:
    frame = report.frame
    out = [Section(f"Protocol {protocol}", paragraphs=[
        "Error (%) per corruption: mean over severities, then mean ± std over seeds."],
        table=corruption_view(frame, protocol, cnames.COMMON))]
    out.append(Section(f"Error (%) per severity, protocol {protocol}", level=3,
                       paragraphs=["Mean over the common corruptions at each severity; clean for "
                                   "reference."], table=severity_view(frame, protocol)))
    deltas = delta_view(report.comparisons, protocol)
    if not deltas.empty:
        out.append(Section(f"Δ error vs {report.baseline} per corruption, protocol {protocol}",
                           level=3, table=deltas, paragraphs=[
                               "Paired delta in points (mean over severities and paired seeds) "
                               "and its verdict: W win, T tie, L loss (95% paired bootstrap)."]))
    cbar = corruption_view(frame, protocol, cnames.CBAR)
    if not cbar.empty and len(cbar.columns) > 2:
        out.append(Section(f"-C-bar corruptions, protocol {protocol}", level=3, table=cbar,
                           paragraphs=["CIFAR-10-C-bar (Mintun, Kirillov & Xie, NeurIPS 2021): "
                                       "error (%) per corruption, mean over severities; their "
                                       "mean is the summary's -C-bar column, never part of the "
                                       "-C mCE."]))
    extras = corruption_view(frame, protocol, cnames.EXTRA)
    if not extras.empty and len(extras.columns) > 2:
        out.append(Section(f"Extra corruptions, protocol {protocol}", level=3, table=extras,
                           paragraphs=["The 4 extra (validation) corruptions; never part of a "
                                       "headline number."]))
    return out


def _reported(report: Report) -> Section:
    published = report.published
    if not published:
        return Section("Reported in the literature", paragraphs=[
            f"None of the {len(load_published())} published numbers in "
            "metabn_bench/resources/published.yaml matches this report's setting (data set, "
            "architecture, test-time protocol, number of test images and corruptions), so none "
            "is shown."])
    cites = sorted({f"{p['source']}: {p['citation']}" for p in published})
    return Section("Reported in the literature", table=published_view(published), bullets=cites,
                   paragraphs=["Published numbers for the same setting, labelled reported; the "
                               "measured column repeats this report's number of the same metric. "
                               "Reported numbers never enter a measured table."])


def _missing(report: Report) -> Section:
    table = missing_view(report.missing, report.unfinished)
    if table.empty:
        return Section("Missing cells", paragraphs=[
            "None: every run has every cell of its corrupted set under every protocol."])
    return Section("Missing cells", table=table, paragraphs=[
        "Cells that some run of the same corrupted set has and these do not. A method's means "
        "use only the cells all of its seeds have."])
