"""A report as a list of sections, rendered to Markdown, LaTeX or HTML.

Sections hold plain text (paragraphs, bullets), at most one table (a DataFrame of strings)
and images (paths relative to where the document is written). Rendering escapes text for the
target format; numbers are formatted before they get here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

_TABLEFMT = {"markdown": "github", "latex": "latex_booktabs", "html": "html"}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---"}


@dataclass
class Section:
    """A titled part of a report."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path)
    level: int = 2


def render_table(df: pd.DataFrame, fmt: str) -> str:
    """A DataFrame of strings as a Markdown, LaTeX (booktabs), HTML or CSV table."""
    if fmt == "csv":
        return df.to_csv(index=False)
    text = tabulate(df, headers="keys", tablefmt=_TABLEFMT[fmt], showindex=False,
                    disable_numparse=True)
    if fmt == "latex":  # tabulate escapes ASCII specials; these need math mode
        text = text.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("—", "---")
    return text


def markdown_link(path: str) -> str:
    """A link target that survives spaces and parentheses (CommonMark's <...> form)."""
    if any(ch in path for ch in " ()<>\t"):
        return "<" + path.replace("<", "%3C").replace(">", "%3E") + ">"
    return path


def latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def render_document(title: str, sections: list[Section], fmt: str) -> str:
    """The whole document in 'markdown', 'latex' or 'html'."""
    if fmt == "markdown":
        return _markdown(title, sections)
    if fmt == "latex":
        return _latex(title, sections)
    if fmt == "html":
        return _html(title, sections)
    raise ValueError(f"no document format '{fmt}'")


def _markdown(title: str, sections: list[Section]) -> str:
    parts = [f"# {title}", ""]
    for s in sections:
        parts += ["#" * s.level + f" {s.title}", ""]
        for p in s.paragraphs:
            parts += [p, ""]
        if s.bullets:
            parts += [f"- {b}" for b in s.bullets] + [""]
        if s.table is not None and not s.table.empty:
            parts += [render_table(s.table, "markdown"), ""]
        for caption, path in s.images:
            parts += [f"![{caption}]({markdown_link(path)})", ""]
    return "\n".join(parts).rstrip() + "\n"


def _latex(title: str, sections: list[Section]) -> str:
    parts = [r"\documentclass{article}", r"\usepackage{booktabs,graphicx,caption}",
             r"\usepackage[margin=2cm,landscape]{geometry}", r"\begin{document}",
             rf"\section*{{{latex_escape(title)}}}"]
    for s in sections:
        cmd = "subsection*" if s.level <= 2 else "subsubsection*"
        parts.append(rf"\{cmd}{{{latex_escape(s.title)}}}")
        parts += [latex_escape(p) + "\n" for p in s.paragraphs]
        if s.bullets:
            parts += [r"\begin{itemize}"] + [rf"\item {latex_escape(b)}" for b in s.bullets]
            parts.append(r"\end{itemize}")
        if s.table is not None and not s.table.empty:
            parts += [r"\begin{center}\small", render_table(s.table, "latex"), r"\end{center}"]
        for caption, path in s.images:
            parts += [r"\begin{figure}[h]\centering",
                      rf"\includegraphics[width=0.9\linewidth]{{{path}}}",
                      rf"\caption*{{{latex_escape(caption)}}}\end{{figure}}"]
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"


def _html(title: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for s in sections:
        level = min(6, s.level)
        parts.append(f"<h{level}>{esc(s.title)}</h{level}>")
        parts += [f"<p>{esc(p)}</p>" for p in s.paragraphs]
        if s.bullets:
            parts.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in s.bullets) + "</ul>")
        if s.table is not None and not s.table.empty:
            parts.append(render_table(s.table, "html"))
        for caption, path in s.images:
            parts.append(f'<figure><img src="{esc(path)}" alt="{esc(caption)}">'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
