"""The tables of an evaluation report read back from report.html and report.md, to compare the two renderings."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class HtmlTables(HTMLParser):
    """Every <table> as rows of cell texts, and the alt text of every <img>."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.alts: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.alts.append(dict(attrs)["alt"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def markdown_tables(md: str) -> list[list[list[str]]]:
    """Every Markdown table as rows of cell texts, without the |---| line and without ** and ` marks."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            cells = [re.sub(r"\*\*|`", "", c.strip()) for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):  # the |---|---:| line
                tables[-1].append(cells)
        previous = line
    return tables
