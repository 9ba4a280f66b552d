"""Report plots as PNG (matplotlib, headless Agg canvas; no display or pyplot state needed).

- errors_by_corruption_<protocol>.png: bars per method and corruption (mean over severities and
  seeds), error bars = sample std over seeds (none for one seed);
- error_vs_severity_<protocol>.png: mean error over the common corruptions at each severity
  (0 = clean), one line per method, band = std over seeds;
- clean_vs_corrupted.png: clean error against CIFAR mCE, one point per (method, protocol),
  error bars = std over seeds;
- error_vs_batch_size.png: mean error over the common corruption cells against the test batch
  size, one line per (method, protocol), from a batch-size sweep's rows (reporting/batch_sizes.py);
- reliability_<protocol>.png: reliability diagrams, clean vs severity 5, from the stored per-image
  confidences (reporting/calibration.py; only when evaluation stored them).
PNG metadata carries no software version or date, so the same numbers give the same bytes
under the same matplotlib.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metabn_bench import fsio
from metabn_bench.corruptions import names as cnames
from metabn_bench.reporting.batch_sizes import batch_size_plot, plot_path
from metabn_bench.reporting.calibration import reliability_diagram
from metabn_bench.reporting.metrics import corruption_stats, severity_table
from metabn_bench.reporting.model import Report

DPI = 110
_MARKERS = "osD^v<>ph*"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with fsio.atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def corruption_bars(report: Report, protocol: str, path: Path) -> Path | None:
    """Grouped bars: corruption on x, one bar per method, std over seeds as error bars."""
    mean, std, count = corruption_stats(report.frame, protocol)
    if mean.empty:
        return None
    methods, corruptions = list(mean.index), list(mean.columns)
    width = 0.8 / len(methods)
    fig = Figure(figsize=(max(6.0, 0.55 * len(corruptions) * max(1, len(methods)) ** 0.5 + 2), 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(corruptions))
    for i, m in enumerate(methods):
        err = [std.loc[m, c] if count.loc[m, c] > 1 else 0.0 for c in corruptions]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean.loc[m].to_numpy(dtype=float),
               width, yerr=err if any(err) else None, capsize=2,
               label=f"{m} (n={int(count.loc[m].max())})")
    ax.set_xticks(x, [c.replace("_", " ") for c in corruptions], rotation=45, ha="right")
    ax.set_ylabel("error (%), mean over severities")
    ax.set_title(f"Error per corruption, protocol {protocol} (bars: std over seeds)")
    for xi, c in enumerate(corruptions):
        if c in cnames.EXTRA or c in cnames.CBAR:
            ax.axvspan(xi - 0.45, xi + 0.45, color="0.9", zorder=0)  # extras, -C-bar: not in mCE
    ax.legend(fontsize=8, ncol=min(4, len(methods)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def severity_curves(report: Report, protocol: str, path: Path) -> Path | None:
    """Error against severity (0 = clean) per method, band = std over seeds."""
    mean, std = severity_table(report.frame, protocol)
    if mean.empty:
        return None
    levels = [0 if c == "clean" else int(c.split()[-1]) for c in mean.columns]
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    for i, m in enumerate(mean.index):
        y, s = mean.loc[m].to_numpy(dtype=float), std.loc[m].to_numpy(dtype=float)
        line = ax.plot(levels, y, marker=_MARKERS[i % len(_MARKERS)], label=m)[0]
        ax.fill_between(levels, y - s, y + s, color=line.get_color(), alpha=0.15)
    ax.set_xticks(levels, ["clean" if v == 0 else str(v) for v in levels])
    ax.set_xlabel("severity")
    ax.set_ylabel("error (%), mean over common corruptions")
    ax.set_title(f"Error vs severity, protocol {protocol} (band: std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def clean_vs_corrupted(report: Report, path: Path) -> Path | None:
    """Clean error (x) against mCE (y): one point per (method, protocol)."""
    rows = [r for r in report.rows if np.isfinite(r["clean_error"]) and np.isfinite(r["mce"])]
    if not rows:
        return None
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    fig = Figure(figsize=(6.0, 4.6))
    ax = fig.add_subplot()
    for r in rows:
        marker = _MARKERS[protocols.index(r["protocol"]) % len(_MARKERS)]
        multi = r["n_seeds"] > 1
        ax.errorbar(r["clean_error"], r["mce"], xerr=r["clean_error_std"] if multi else None,
                    yerr=r["mce_std"] if multi else None, fmt=marker, color=colours[r["method"]],
                    capsize=2, markersize=7)
    for m in methods:
        ax.plot([], [], "-", linewidth=5, color=colours[m], label=m)
    for i, p in enumerate(protocols):
        ax.plot([], [], _MARKERS[i % len(_MARKERS)], color="0.4", label=f"protocol {p}")
    ax.set_xlabel("clean error (%)")
    ax.set_ylabel("mCE (%), CIFAR convention")
    ax.set_title("Clean vs corrupted error (bars: std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(report: Report, out_dir: str | Path) -> list[tuple[str, Path]]:
    """Every plot of a report into `out_dir`; returns (caption, path) pairs."""
    out = Path(out_dir)
    fsio.ensure_dir(out)
    made: list[tuple[str, Path | None]] = []
    for protocol in dict.fromkeys(r["protocol"] for r in report.rows):
        made.append((f"Error per corruption, protocol {protocol}",
                     corruption_bars(report, protocol, out / f"errors_by_corruption_{_slug(protocol)}.png")))
        made.append((f"Error vs severity, protocol {protocol}",
                     severity_curves(report, protocol, out / f"error_vs_severity_{_slug(protocol)}.png")))
    made.append(("Clean vs corrupted error", clean_vs_corrupted(report, out / "clean_vs_corrupted.png")))
    sweep = batch_size_plot(report.frame)
    if sweep is not None:
        made.append(("Error vs test batch size", _save(sweep, plot_path(out))))
    for protocol in dict.fromkeys(r["protocol"] for r in report.rows):
        fig = reliability_diagram(report, protocol)
        if fig is not None:
            made.append((f"Reliability, clean vs severity 5, protocol {protocol}",
                         _save(fig, out / f"reliability_{_slug(protocol)}.png")))
    return [(caption, path) for caption, path in made if path is not None]
