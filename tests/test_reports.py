"""Reports: normalised mCE, every view, missing cells, reported numbers, formats, schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from metabn_bench.corruptions import names as cnames
from metabn_bench.reporting.metrics import cells_frame, corruption_stats, severity_table, summary_rows
from metabn_bench.reporting.missing import NOT_EVALUATED, NOT_FINISHED, PROTOCOL_NOT_EVALUATED, run_status
from metabn_bench.reporting.published import dataset_family, load_published
from metabn_bench.reporting.report import FORMATS, build_report, collect, format_report, write_results
from tests.report_fixtures import make_rows

V1_ROW_KEYS = {"method", "protocol", "arch", "n_seeds", "seeds", "clean_error", "clean_error_std",
               "mce", "mce_std", "severity1", "severity5", "severity5_std", "corruptions",
               "run_ids", "delta_mce_vs_vanilla"}


def _cells(method: str, clean: float, errors: dict[tuple[str, int], float], protocol: str = "none",
           run: str | None = None) -> list[dict]:
    rows = [{"corruption": "clean", "severity": 0, "error": clean}]
    rows += [{"corruption": c, "severity": s, "error": e} for (c, s), e in errors.items()]
    for r in rows:
        r.update(run_id=run or f"{method}-s0", method=method, seed=0, arch="wrn10_1",
                 protocol=protocol, set_id="s", test_batch_size=100, n=100)
    return rows


def test_normalised_and_relative_mce_against_the_reference_run() -> None:
    base = {("gaussian_noise", s): 10.0 * s for s in range(1, 6)}
    base |= {("contrast", s): 20.0 for s in range(1, 6)}
    other = {k: 2 * v for k, v in base.items()}
    rows = _cells("vanilla", 5.0, base) + _cells("cutout", 5.0, other)
    recs = {r["method"]: r for r in summary_rows(cells_frame(rows))}
    assert recs["vanilla"]["mce_normalized"] == pytest.approx(100.0)
    assert recs["vanilla"]["relative_mce"] == pytest.approx(100.0)
    assert recs["cutout"]["mce_normalized"] == pytest.approx(200.0)
    # relative: noise (300-25)/(150-25) = 2.2, contrast (200-25)/(100-25) = 2.333...
    assert recs["cutout"]["relative_mce"] == pytest.approx(100 * (2.2 + 175 / 75) / 2)
    assert recs["cutout"]["delta_clean_error_vs_vanilla"] == 0.0


def test_the_reference_is_vanilla_without_adaptation_and_undefined_ratios_are_nan() -> None:
    errors = {("contrast", s): 4.0 for s in range(1, 6)}  # below the clean error of 5
    rows = _cells("vanilla", 5.0, errors) + _cells("vanilla", 3.0, errors, protocol="bn")
    recs = {r["protocol"]: r for r in summary_rows(cells_frame(rows))}
    assert recs["bn"]["mce_normalized"] == pytest.approx(100.0)  # same errors as the reference
    assert recs["bn"]["relative_mce"] != recs["bn"]["relative_mce"]  # NaN: denominator <= 0


def test_views_show_mean_std_and_n_over_seeds() -> None:
    rows, _ = make_rows(seeds=(0, 1, 2))
    df = cells_frame(rows)
    mean, std, count = corruption_stats(df, "none")
    assert list(mean.columns) == ["gaussian_noise", "defocus_blur", "contrast"]
    assert (count == 3).all().all()
    per_seed = df[(df.method == "cutout") & (df.corruption == "contrast")].groupby("seed")["error"].mean()
    assert mean.loc["cutout", "contrast"] == pytest.approx(per_seed.mean())
    assert std.loc["cutout", "contrast"] == pytest.approx(per_seed.std(ddof=1))
    sev_mean, _ = severity_table(df, "none")
    assert list(sev_mean.columns) == ["clean"] + [f"severity {s}" for s in range(1, 6)]
    rec = {r["method"]: r for r in summary_rows(df)}["cutout"]
    assert sev_mean.loc["cutout", "severity 5"] == pytest.approx(rec["severity5"])


def test_missing_cells_and_unfinished_runs_are_listed_with_the_reason(tmp_path: Path) -> None:
    rows, vectors = make_rows(protocols=("none", "bn"))
    rows = [r for r in rows if not (r["run_id"] == "cutout-s1" and r["corruption"] == "contrast"
                                    and r["protocol"] == "none" and r["severity"] >= 4)]
    rows = [r for r in rows if not (r["run_id"] == "vanilla-s0" and r["protocol"] == "bn")]
    unfinished = tmp_path / "runs" / "half"
    unfinished.mkdir(parents=True)
    (unfinished / "config.json").write_text(json.dumps({"method": "mixup", "seed": 3}))
    (unfinished / "env.json").write_text("{}")
    status = run_status([tmp_path / "runs"])
    assert status == [{"run_dir": str(unfinished), "method": "mixup", "seed": 3, "reason": NOT_FINISHED}]
    report = build_report(rows, {}, vectors=vectors, unfinished=status)
    missing = {(m["run_id"], m["protocol"]): m for m in report.missing}
    assert missing[("cutout-s1", "none")]["missing"] == "contrast (severities 4-5)"
    assert missing[("cutout-s1", "none")]["reason"] == NOT_EVALUATED
    assert missing[("vanilla-s0", "bn")]["reason"] == PROTOCOL_NOT_EVALUATED
    text = format_report(report, "markdown")
    assert "contrast (severities 4-5)" in text and NOT_FINISHED in text and "mixup" in text
    assert report.summary["missing"]["runs"] == status


def test_reported_numbers_only_where_the_setting_matches() -> None:
    assert dataset_family("npy:/x", "CIFAR-10, JPEG copy") == "cifar10"
    assert dataset_family("npy:/x", "CIFAR-100 (torchvision)") == "cifar100"
    assert dataset_family("synthetic", "synthetic shapes v1") is None
    entries = load_published()
    assert all(e.citation and e.url for e in entries)
    corruptions = tuple(cnames.COMMON)
    rows, vectors = make_rows(n=10000, seeds=(0,), dataset="npy:/data/cifar10", arch="wrn40_2",
                              corruptions=corruptions, source="CIFAR-10, JPEG copy")
    report = build_report(rows, {}, vectors=vectors, resamples=50)
    reported = {(p["method"], p["metric"]): p for p in report.published}
    assert reported[("vanilla", "mce")]["reported"] == 26.9
    assert reported[("cutout", "mce")]["reported"] == 26.8
    assert "JPEG copy" in reported[("vanilla", "mce")]["notes"]
    measured = {r["method"]: r["mce"] for r in report.rows}
    assert reported[("vanilla", "mce")]["measured"] == measured["vanilla"] != 26.9  # never mixed
    text = format_report(report, "markdown")
    assert "Reported in the literature" in text and "arXiv:1912.02781" in text
    small, vec = make_rows(n=200, seeds=(0,), dataset="npy:/data/cifar10", arch="wrn40_2",
                           corruptions=corruptions, source="CIFAR-10, JPEG copy")
    assert build_report(small, {}, vectors=vec, resamples=50).published == []  # not 10,000 images
    other, vec = make_rows(n=10000, seeds=(0,), dataset="npy:/data/cifar10", arch="wrn10_1",
                           corruptions=corruptions, source="CIFAR-10, JPEG copy")
    assert build_report(other, {}, vectors=vec, resamples=50).published == []  # not WRN-40-2


def test_every_format_and_the_public_schema(tmp_path: Path) -> None:
    rows, vectors = make_rows(protocols=("none", "bn"))
    report = build_report(rows, {"data_source": "synthetic shapes v1"}, vectors=vectors, resamples=200)
    texts = {f: format_report(report, f) for f in FORMATS}
    md = texts["markdown"]
    for heading in ("## Summary", "## Comparison with vanilla", "## Per test-time protocol: mCE",
                    "## Protocol bn", "### Error (%) per severity, protocol none",
                    "### Δ error vs vanilla per corruption, protocol none", "## Missing cells",
                    "## Definitions"):
        assert heading in md, heading
    assert "+" in md and "[" in md and "1/1/1" in md  # deltas, intervals, win/tie/loss
    assert texts["latex"].startswith("\\documentclass") and "\\end{document}" in texts["latex"]
    assert "\\_" in texts["latex"] and "$\\pm$" not in texts["markdown"]
    assert "<table class=\"sortable\">" in texts["html"] and "<h2>Summary</h2>" in texts["html"]
    assert len(pd.read_csv(io.StringIO(texts["csv"]))) == len(rows)
    summary = json.loads(texts["json"])
    assert summary["schema"] == "metabn-bench summary v1"
    for row in summary["rows"]:
        assert set(row) >= V1_ROW_KEYS
    cut = next(r for r in summary["rows"] if r["method"] == "cutout" and r["protocol"] == "none")
    lo, hi = cut["delta_mce_vs_vanilla_ci95"]
    assert lo <= cut["delta_mce_vs_vanilla"] <= hi
    assert cut["delta_mce_vs_vanilla_paired"] == pytest.approx(cut["delta_mce_vs_vanilla"])
    assert cut["win_tie_loss_vs_vanilla"]["win"] == ["gaussian_noise"]
    assert summary["statistics"]["resamples"] == 200
    assert summary["baseline"]["normalization_reference"]["protocol"] == "none"
    out = write_results(report, tmp_path / "res", "test", plots=False)
    again = collect([out])  # a results directory reads back with its per-image vectors
    assert len(again.rows) == len(rows) and len(again.vectors) == len(vectors)
    back = build_report(again.rows, {}, vectors=again.vectors, resamples=200)
    assert back.summary["rows"] == json.loads((out / "summary.json").read_text())["rows"]
