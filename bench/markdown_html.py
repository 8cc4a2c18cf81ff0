"""The Markdown the run writes (fid_changes.md, ratios.md: headings, paragraphs, pipe tables, **bold**, `code`)
as HTML for the report. Only that subset: every other character is text, escaped."""
from __future__ import annotations

import html
import re

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def inline(text: str) -> str:
    """Escaped text with `code` and **bold** marked up (code first: its content stays literal)."""
    parts = _CODE.split(text)   # even indices: text, odd: code spans
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [c.strip() for c in line.split("|")]


def _aligns(rule: str) -> list[str]:
    return ["right" if c.endswith(":") and not c.startswith(":") else "center" if c.startswith(":") and
            c.endswith(":") else "" for c in _cells(rule)]


def table(lines: list[str], css_class: str = "sortable") -> str:
    """A pipe table: header line, alignment rule, body lines."""
    head, aligns, body = _cells(lines[0]), _aligns(lines[1]), [_cells(x) for x in lines[2:]]

    def cell(tag, text, i):
        a = aligns[i] if i < len(aligns) else ""
        return f"<{tag}{f' class={a}' if a else ''}>{inline(text)}</{tag}>"

    rows = "".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r)) + "</tr>" for r in body)
    return (f"<table class=\"{css_class}\"><thead><tr>" + "".join(cell("th", c, i) for i, c in enumerate(head))
            + f"</tr></thead><tbody>{rows}</tbody></table>")


def to_html(markdown: str, heading_offset: int = 1) -> str:
    """Block by block: a heading line, a table (a '|' line followed by a rule), else a paragraph of the
    consecutive non-blank lines. Headings move down `heading_offset` levels (the report has its own h1, h2)."""
    lines, out, i = markdown.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif m := _HEADING.match(line):
            level = min(6, len(m.group(1)) + heading_offset)
            out.append(f"<h{level}>{inline(m.group(2).strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append(f"<div class=\"scroll\">{table(lines[i:j])}</div>")
            i = j
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not _HEADING.match(lines[j]) and not (
                    lines[j].lstrip().startswith("|") and j + 1 < len(lines) and _RULE.match(lines[j + 1])):
                j += 1
            out.append("<p>" + inline(" ".join(x.strip() for x in lines[i:j])) + "</p>")
            i = j
    return "\n".join(out)
