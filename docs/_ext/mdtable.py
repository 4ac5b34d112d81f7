"""``.. markdown-table:: PATH``: a pipe table of a Markdown file, rendered as a table of the page.

The benchmark results are written once, in ``bench/results/README.md`` (next to the JSON and PNG
of each run); the docs show its tables from there, so the two cannot drift apart.

Options: ``:section:`` the heading the table is under (the first table there is taken),
``:missing:`` the text shown when that section has no table (else a missing table is a warning),
``:caption:``. The table gets the class ``markdown-table`` (numbers kept on one line).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

_HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _section(lines: list[str], title: str) -> list[str] | None:
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and m.group(2) == title:
            level = len(m.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if (h := _HEADING.match(lines[j])) and len(h.group(1)) <= level),
                len(lines),
            )
            return lines[i + 1 : end]
    return None


def _first_table(lines: list[str]) -> list[list[str]] | None:
    block: list[str] = []
    for line in lines:
        if line.lstrip().startswith("|"):
            block.append(line.strip())
        elif block:
            break
    if len(block) < 2 or not _RULE.match(block[1]):
        return None
    return [[cell.strip() for cell in row.strip("|").split("|")] for i, row in enumerate(block) if i != 1]


def _inline(cell: str) -> str:
    """Markdown's inline code and emphasis as reST; everything else escaped."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", cell)):
        if i % 2:
            out.append(f"``{part[1:-1]}``")
        else:
            part = part.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
            out.append(re.sub(r"\\\*\\\*(.+?)\\\*\\\*", r"**\1**", part))
    return "".join(out) or "\\ "


class MarkdownTable(SphinxDirective):
    required_arguments = 1
    option_spec: ClassVar[dict[str, Any]] = {
        "section": directives.unchanged_required,
        "missing": directives.unchanged,
        "caption": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        rel, path = self.env.relfn2path(self.arguments[0], self.env.docname)
        self.env.note_dependency(rel)
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        title = self.options.get("section")
        part = lines if title is None else _section(lines, title)
        if part is None:
            logger.warning("%s has no section %r", rel, title, location=self.get_location())
            return []
        rows = _first_table(part)
        if rows is None:
            if "missing" in self.options:
                return self.parse_text_to_nodes(self.options["missing"])
            logger.warning("%s has no table under %r", rel, title, location=self.get_location())
            return []
        width = len(rows[0])
        rst = [
            f".. list-table:: {self.options.get('caption', '')}".rstrip(),
            "   :header-rows: 1",
            "   :class: markdown-table",
            "",
        ]
        for row in rows:
            row = (row + [""] * width)[:width]
            rst.append(f"   * - {_inline(row[0])}")
            rst.extend(f"     - {_inline(cell)}" for cell in row[1:])
        return self.parse_text_to_nodes("\n".join(rst))


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("markdown-table", MarkdownTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
