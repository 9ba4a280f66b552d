"""`report --format html`: one self-contained page a researcher can send to a colleague.

Everything is inside the file: the plots as base64 PNG data URIs, the style sheet, and a few
lines of script that sort a table when its header is clicked. Nothing is loaded from the
network (no fonts, style sheets, scripts or images from elsewhere), so the page reads the
same offline, in a mail attachment or on a cluster without internet access.

Order: the summary table first, then a method x corruption heat map (table cells coloured by
error, so it needs no picture), the plots, every other section of the full report
(comparisons, per-protocol views, missing cells, definitions), then provenance and the
command that reproduces the page.
"""

from __future__ import annotations

import base64
import html
import shlex
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from metabn_bench.corruptions import names as cnames
from metabn_bench.reporting.document import Section
from metabn_bench.reporting.model import Report
from metabn_bench.reporting.sections import report_sections

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
 max-width:1200px;padding:1em 1.5em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}
.wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3;position:sticky;top:0}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#999}
table.heat td.v{color:#000;min-width:3.2em}
.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{flex:1 1 420px;max-width:580px;margin:0}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em}
code,pre{background:#f6f6f6;padding:2px 4px;border-radius:3px}
pre{padding:.6em;overflow-x:auto;white-space:pre-wrap}
.note{color:#555;font-size:.9em}
"""

# Click a header to sort by that column (numbers by value, text alphabetically; again to
# reverse). Inline so the page needs nothing from elsewhere.
_SCRIPT = """
function sortTable(th){var table=th.closest('table'),body=table.tBodies[0];
var i=Array.prototype.indexOf.call(th.parentNode.children,th);
var asc=th.getAttribute('data-dir')!=='asc';th.setAttribute('data-dir',asc?'asc':'desc');
function key(tr){var t=(tr.children[i]||{}).textContent||'';
var m=t.replace(/\\u2212/g,'-').match(/^\\s*[-+]?\\d+(\\.\\d+)?/);return m?parseFloat(m[0]):t;}
var rows=Array.prototype.slice.call(body.rows);
rows.sort(function(a,b){var x=key(a),y=key(b);
if(typeof x==='number'&&typeof y==='number'){return asc?x-y:y-x;}
x=String(x);y=String(y);return asc?x.localeCompare(y):y.localeCompare(x);});
rows.forEach(function(r){body.appendChild(r);});}
document.addEventListener('DOMContentLoaded',function(){
document.querySelectorAll('table.sortable th').forEach(function(th){
th.addEventListener('click',function(){sortTable(th);});});});
"""


def _esc(text: Any) -> str:
    return html.escape(str(text))


def table_html(df: pd.DataFrame, sortable: bool = True) -> str:
    """A DataFrame of strings as an HTML table (sortable by clicking its headers)."""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
                   for row in df.astype(str).itertuples(index=False))
    return (f'<div class="wrap"><table{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _colour(value: float, low: float, high: float) -> str:
    """Green (low error) through yellow to red (high error), as an rgb() colour."""
    t = 0.0 if high <= low else min(1.0, max(0.0, (value - low) / (high - low)))
    red = int(120 + 135 * min(1.0, 2 * t))
    green = int(200 - 90 * max(0.0, 2 * t - 1))
    blue = 120 - int(40 * t)
    return f"rgb({red},{green},{blue})"


def heat_map(frame: pd.DataFrame) -> str:
    """Method (and protocol) x corruption table of mean error over severities and seeds, each
    cell coloured by its error; empty string without corrupted cells."""
    if frame.empty or "corruption" not in frame:
        return ""
    cells = frame[frame["corruption"] != "clean"]
    if cells.empty:
        return ""
    grid = cells.groupby(["method", "protocol", "corruption"])["error"].mean().unstack()
    order = cnames.canonical_order(list(grid.columns))
    grid = grid[order]
    low, high = float(grid.min().min()), float(grid.max().max())
    head = "<th>method</th><th>protocol</th>" + "".join(
        f"<th>{_esc(c.replace('_', ' '))}</th>" for c in order) + "<th>mean</th>"
    body = []
    for (method, protocol), values in grid.iterrows():
        tds = []
        for value in values:
            if pd.isna(value):
                tds.append('<td class="v">—</td>')
            else:
                tds.append(f'<td class="v" style="background:{_colour(value, low, high)}">'
                           f"{value:.1f}</td>")
        mean = values.mean()
        tds.append(f'<td class="v" style="background:{_colour(mean, low, high)}">{mean:.1f}</td>')
        body.append(f"<tr><td>{_esc(method)}</td><td>{_esc(protocol)}</td>{''.join(tds)}</tr>")
    return (f'<div class="wrap"><table class="heat sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
            f'<p class="note">Error (%) per corruption, mean over severities and seeds; colour '
            f"from green ({low:.1f}) to red ({high:.1f}).</p>")


def data_uri(path: str | Path) -> str:
    """A PNG file as a data: URI (the page then holds the picture itself)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _images(report: Report) -> list[tuple[str, str]]:
    """(caption, data URI) of the report's plots; made in a temporary directory when the
    report has none, since the page carries its pictures itself."""
    images = report.images
    if images:
        return [(caption, data_uri(path)) for caption, path in images]
    from metabn_bench.reporting.plots import write_plots

    with tempfile.TemporaryDirectory(prefix="metabn-html-") as tmp:
        return [(caption, data_uri(path)) for caption, path in write_plots(report, tmp)]


def _section_html(section: Section) -> str:
    level = min(6, max(2, section.level))
    parts = [f"<h{level}>{_esc(section.title)}</h{level}>"]
    parts += [f"<p>{_esc(p)}</p>" for p in section.paragraphs]
    if section.bullets:
        parts.append("<ul>" + "".join(f"<li>{_esc(b)}</li>" for b in section.bullets) + "</ul>")
    if section.table is not None and not section.table.empty:
        parts.append(table_html(section.table))
    return "\n".join(parts)


def reproduce_command(args: list[str]) -> str:
    """`metabn-bench ARGS...`, each argument quoted for a POSIX shell."""
    return "metabn-bench " + " ".join(shlex.quote(str(a)) for a in args)


def html_page(report: Report, title: str, command: str | None = None) -> str:
    """The whole page as one string (UTF-8 HTML5, nothing external)."""
    sections = report_sections(report, [])
    by_title = {s.title: s for s in sections}
    first = by_title.get("Summary")
    provenance = by_title.get("Provenance")
    caveats = by_title.get("Read first")
    rest = [s for s in sections if s.title not in ("Summary", "Provenance", "Read first")]
    body = [f"<h1>{_esc(title)}</h1>"]
    if first is not None:
        body.append(_section_html(first))
    if caveats is not None:  # what the summary's numbers mean, right below them
        body.append(_section_html(caveats))
    heat = heat_map(report.frame)
    if heat:
        body.append("<h2>Error by method and corruption</h2>" + heat)
    images = _images(report)
    if images:
        body.append('<h2>Plots</h2><div class="figs">')
        body += [f'<figure><img src="{uri}" alt="{_esc(caption)}">'
                 f"<figcaption>{_esc(caption)}</figcaption></figure>" for caption, uri in images]
        body.append("</div>")
    body += [_section_html(s) for s in rest]
    if provenance is not None:
        body.append(_section_html(provenance))
    preset = report.summary.get("provenance", {}).get("preset")
    commands = [command or reproduce_command(["report", "RESULTS", "--format", "html"])]
    if preset:
        commands.insert(0, f"metabn-bench run --preset {shlex.quote(str(preset))}")
    body.append("<h2>Reproduce</h2><pre><code>" + _esc("\n".join(commands)) + "</code></pre>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_STYLE}</style>",
        f"<script>{_SCRIPT}</script></head><body>", *body, "</body></html>", ""])
