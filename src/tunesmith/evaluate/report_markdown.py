"""report.md: the evaluation :class:`~tunesmith.evaluate.report_content.Report` as Markdown."""

from __future__ import annotations

from tunesmith.evaluate.report_content import (
    Block, Bullets, Code, Example, ModelExamples, Paragraph, Report, Strong, Table, Text,
)

FENCE_LIMIT = 600  # characters of an example shown (the end of it); report.html shows all


def _text(t: Text) -> str:
    if isinstance(t, tuple):
        return "".join(_text(x) for x in t)
    if isinstance(t, Strong):
        return f"**{t.text}**"
    if isinstance(t, Code):
        return f"`{t.text}`"
    return t


def _table(t: Table) -> str:
    lines = ["| " + " | ".join(t.header) + " |", "|---|" + "---:|" * (len(t.header) - 1)]
    lines += ["| " + " | ".join(_text(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _block(b: Block) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Bullets):
        return "\n".join(f"- {_text(i)}" for i in b.items)
    assert isinstance(b, Paragraph)
    return _text(b.text)


def _fence(text: str | None) -> str:
    t = "(empty)" if not text else text if len(text) <= FENCE_LIMIT else "…" + text[-FENCE_LIMIT:]
    return "```\n" + t.replace("```", "ˋˋˋ") + "\n```"


def _wrong_answer(e: Example) -> list[str]:
    return [f"**{e.id}**", "\n".join(["input:", _fence(e.input), "expected:", _fence(e.expected), "got:",
                                      _fence(e.got)])]


def _examples(m: ModelExamples, limit: int) -> list[str]:
    chunks = []
    if m.failed:
        chunks.append(f"## Failed requests: {m.model} ({len(m.failed)}, not scored)")
        chunks.append("\n".join(f"- `{e.id}`: {e.error}" for e in m.failed[:limit]))
    wrong = m.wrong[:limit]
    if wrong:
        chunks.append(f"## Wrong answers: {m.model} (first {len(wrong)})")
        for e in wrong:
            chunks += _wrong_answer(e)
    return chunks


def render_markdown(report: Report) -> str:
    chunks = [f"# {report.title}", _block(report.meta)]
    for s in report.sections:
        chunks.append(f"{'#' * s.level} {s.title}")
        chunks += [_block(b) for b in s.blocks]
    for m in report.examples:
        chunks += _examples(m, report.show_failures)
    return "\n\n".join(c for c in chunks if c) + "\n"
