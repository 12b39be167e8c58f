"""Every evaluation of a run is kept: one folder per evaluation, the latest also at the top of the run folder.

::

    <run_dir>/
      metrics.json, report.md, report.html, eval/     the latest evaluation (a copy)
      evaluations/
        2025-06-01T12-30-05Z/                         one finished evaluation, named by its UTC start time
          metrics.json  report.md  report.html  config.yaml (the resolved config it ran with)  eval/*.jsonl
        2025-06-01T12-30-05Z-2/                       a second one started in the same second
        2025-06-01T14-02-11Z.partial/                 an evaluation that is running, or crashed (generations so far)

An evaluation works in ``<id>.partial/`` and is renamed to ``<id>/`` only when all of its files are
written, so a folder without the suffix is always complete. Then the latest copy at the top level is
replaced file by file (each write atomic; ``metrics.json`` last, and it names its folder under
``"evaluation"``). Top-level results from before this layout (a ``metrics.json`` that names no
evaluation) are copied into ``evaluations/`` first, so nothing is lost.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunesmith.utils.io import atomic_dir, write_text

EVALUATIONS = "evaluations"
PARTIAL = ".partial"
GENERATIONS = "eval"
METRICS, REPORT_MD, REPORT_HTML, CONFIG = "metrics.json", "report.md", "report.html", "config.yaml"
LATEST_FILES = (REPORT_HTML, REPORT_MD, METRICS)  # metrics.json last: it names the evaluation the others belong to


@dataclass(frozen=True)
class Evaluation:
    """One evaluation's folder in ``<run_dir>/evaluations/``."""

    run_dir: Path
    id: str

    @property
    def folder(self) -> Path:
        return self.run_dir / EVALUATIONS / self.id

    @property
    def partial(self) -> Path:
        return self.run_dir / EVALUATIONS / f"{self.id}{PARTIAL}"

    @property
    def generations(self) -> Path:
        """Where the generations go while the evaluation runs."""
        return self.partial / GENERATIONS

    def describe(self) -> dict[str, str]:
        """The ``"evaluation"`` entry of metrics.json."""
        return {"id": self.id, "folder": f"{EVALUATIONS}/{self.id}"}


@dataclass(frozen=True)
class Finished:
    folder: Path  # the finished evaluation
    earlier: Path | None  # where top-level results from before evaluations were kept went, if there were any


def _timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")


def _reserve(run_dir: Path, stamp: str) -> Evaluation:
    """A new evaluation folder (``<id>.partial``), ``<stamp>``, else ``<stamp>-2``, ``-3``, ... ."""
    root = run_dir / EVALUATIONS
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        ev = Evaluation(run_dir, stamp if n == 1 else f"{stamp}-{n}")
        n += 1
        if ev.folder.exists():
            continue
        try:
            ev.partial.mkdir()  # exclusive: two evaluations started together get different ids
        except FileExistsError:
            continue
        return ev


def start_evaluation(run_dir: Path, *, now: datetime | None = None) -> Evaluation:
    """Reserve the folder of a new evaluation of ``run_dir``, named by its UTC start time."""
    return _reserve(run_dir, _timestamp(now or datetime.now(UTC)))


def abandon_evaluation(ev: Evaluation) -> Path | None:
    """An evaluation that stopped: its ``.partial`` folder stays if it holds generations (returned), else goes."""
    if any(p.is_file() for p in ev.partial.rglob("*")):
        return ev.partial
    shutil.rmtree(ev.partial, ignore_errors=True)
    return None


def list_evaluations(run_dir: Path) -> list[Path]:
    """The finished evaluation folders of a run, oldest first."""
    root = run_dir / EVALUATIONS
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and not p.name.endswith(PARTIAL) and (p / METRICS).is_file()]

    def key(p: Path) -> tuple[str, int]:  # "...Z-10" after "...Z-9"
        stamp, dash, n = p.name.rpartition("-")
        return (stamp, int(n)) if dash and n.isdigit() else (p.name, 1)

    return sorted(done, key=key)


def _names_an_evaluation(metrics_path: Path) -> bool:
    try:
        data = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("evaluation"), dict)


def keep_earlier_results(run_dir: Path) -> Path | None:
    """Copy top-level results written before evaluations were kept into ``evaluations/`` (once).

    Returns the folder they went to, or None when there was nothing to keep.
    """
    top = run_dir / METRICS
    if not top.is_file() or _names_an_evaluation(top):
        return None
    ev = _reserve(run_dir, _timestamp(datetime.fromtimestamp(top.stat().st_mtime, UTC)))
    for name in LATEST_FILES:  # not config.yaml: the command now running has replaced it
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, ev.partial / name)
    if (run_dir / GENERATIONS).is_dir():
        shutil.copytree(run_dir / GENERATIONS, ev.generations)
    os.replace(ev.partial, ev.folder)
    return ev.folder


def finish_evaluation(ev: Evaluation, *, metrics: dict[str, Any], report_md: str, report_html: str,
                      config_yaml: str) -> Finished:
    """Write the evaluation's files, mark it finished, make it the run's latest."""
    files = {METRICS: json.dumps(metrics, indent=2, ensure_ascii=False, default=str) + "\n",
             REPORT_MD: report_md, REPORT_HTML: report_html, CONFIG: config_yaml}
    for name, text in files.items():
        write_text(ev.partial / name, text)
    ev.generations.mkdir(exist_ok=True)
    earlier = keep_earlier_results(ev.run_dir)
    os.replace(ev.partial, ev.folder)
    with atomic_dir(ev.run_dir / GENERATIONS) as tmp:
        for f in sorted(ev.folder.joinpath(GENERATIONS).iterdir()):
            shutil.copy2(f, tmp / f.name)
    for name in LATEST_FILES:
        write_text(ev.run_dir / name, files[name])
    return Finished(ev.folder, earlier)
