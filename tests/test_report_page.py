"""`report --format html`: one self-contained page, checked as text and in a real headless
browser (Debian's chromium; skipped where it is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metabn_bench.cli import app
from metabn_bench.evaluation.evaluate import evaluate

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: after load, the browser writes what it sees into #probe
# (tables, rows, decoded pictures, anything fetched from the network), then sorts the summary
# table by its first column twice to show the inline sorting works.
PROBE = """<pre id="probe"></pre><script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var fetched = performance.getEntriesByType('resource').map(function (e) { return e.name; })
      .filter(function (n) { return n.indexOf('data:') !== 0; });
  var table = document.querySelector('table.sortable');
  var th = table.tHead.rows[0].cells[0];
  th.click(); var asc = table.tBodies[0].rows[0].cells[0].textContent;
  th.click(); var desc = table.tBodies[0].rows[0].cells[0].textContent;
  document.getElementById('probe').textContent = JSON.stringify({
    tables: document.querySelectorAll('table').length,
    heat: document.querySelectorAll('table.heat td[style]').length,
    images: imgs.length,
    decoded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    fetched: fetched, asc: asc, desc: desc,
    width: document.documentElement.scrollWidth
  });
});
</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, trained_run: Path, corrupted_set: Path) -> Path:
    """An html report of an evaluated run (in a directory whose name has a space)."""
    root = tmp_path_factory.mktemp("page")
    run = root / "my runs" / "vanilla"
    shutil.copytree(trained_run, run)
    evaluate(run, corrupted_set, ("none",), device="cpu", progress=False)
    out = root / "report dir" / "report.html"
    result = CliRunner().invoke(app, ["report", str(run.parent), "--format", "html",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert not list(page.parent.glob("*.png"))  # the pictures are inside, not next to it
    links = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert links and all(link.startswith("data:image/png;base64,") for link in links), links
    assert not re.search(r"https?://", text)
    assert "@import" not in text and "url(" not in text


def test_page_order_summary_heat_map_provenance_reproduce(page: Path) -> None:
    text = page.read_text()
    order = [text.index(h) for h in ("<h2>Summary</h2>", "<h2>Error by method and corruption",
                                     "<h2>Plots</h2>", "<h2>Provenance</h2>", "<h2>Reproduce")]
    assert order == sorted(order)
    assert "metabn-bench report &#x27;" in text.split("<h2>Reproduce")[1]  # quoted path
    assert 'class="heat sortable"' in text and "background:rgb(" in text


def test_markdown_links_survive_spaces(page: Path, tmp_path: Path) -> None:
    run = page.parent.parent / "my runs" / "vanilla"
    out = tmp_path / "my report" / "report.md"
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--plots",
                                      str(tmp_path / "my plots")])
    assert result.exit_code == 0, result.output
    links = re.findall(r"!\[[^\]]*\]\(<([^>]*)>\)", out.read_text())
    assert links and all((out.parent / link).is_file() for link in links), links


@pytest.mark.skipif(BROWSER is None, reason="chromium is not installed")
def test_page_renders_in_a_headless_browser(page: Path, tmp_path: Path) -> None:
    import json

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    # Any fetch would go to an unreachable proxy and every name fails to resolve.
    cmd = [str(BROWSER), "--headless", "--no-sandbox", "--disable-gpu",
           "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--window-size=1366,768", "--virtual-time-budget=5000", "--dump-dom",
           probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found and found.group(1), dom[-2000:]
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["tables"] >= 3 and seen["heat"] >= 4
    assert seen["images"] >= 3 and seen["decoded"] == seen["images"]
    assert seen["fetched"] == []
    assert seen["asc"] <= seen["desc"]
    shot = tmp_path / "page.png"
    subprocess.run([*cmd[:-2], f"--screenshot={shot}", probe.as_uri()], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
