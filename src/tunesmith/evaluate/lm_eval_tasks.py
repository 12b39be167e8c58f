"""Standard tasks of EleutherAI's lm-evaluation-harness as a regression measure (``eval.regression.lm_eval``).

lm-eval (the optional ``lmeval`` extra) scores the models ``tunesmith eval`` has already loaded, through its
``HFLM`` wrapper of a transformers model: the base, then the same base with the run's adapter injected (PEFT), so
base and tuned share one loaded model and are measured on exactly the weights the task and perplexity
measurements see. (Not through an in-process ``tunesmith serve``: the evaluate stage does not depend on the
deploy stage, and tests/test_deploy/test_serve_lm_eval.py already shows the server hands lm-eval the same
log-likelihoods as a direct forward pass.)

Tasks are found by name in, first, the task folder shipped with tunesmith (``data/lm_eval/``:
``tunesmith_general_knowledge``) and ``include_path``; names not there are looked up in lm-eval's own task list
(mmlu, arc_easy, hellaswag, ifeval, ...: their data come from the Hugging Face hub on first use). All names are
checked, and each task's data loaded, before any model is loaded.

:func:`task_scores` (pure) turns lm-eval's results into ``{task: {"n", "group"?, "metrics": {metric: {"value",
"stderr", "higher_is_better"}}}}``; :mod:`tunesmith.evaluate.regression` compares them with base.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, TunesmithError, closest
from tunesmith.evaluate.config import LmEvalConfig

SHIPPED_TASKS = Path(__file__).parent / "data" / "lm_eval"
INSTALL_HINT = ("pip install 'tunesmith[lmeval]' (lm-eval 0.4.13 or later 0.4.x), "
                "or set eval.regression.lm_eval.tasks: []")

# (logger, start of the message): lm-eval's notes that do not apply to a model handed over already loaded
_NOISE = (
    ("lm_eval.models.huggingface", "`pretrained` model kwarg is not of type `str`"),
    ("lm_eval.models.huggingface", "Passed an already-initialized model through `pretrained`"),
    ("lm_eval.api.task", "tunesmith_general_knowledge: Custom kwargs can be passed"),
)


def _lm_eval():
    try:
        import lm_eval
        import lm_eval.models.huggingface  # noqa: F401  (HFLM: needs transformers, already a dependency)
        import lm_eval.tasks  # noqa: F401
    except ImportError as e:
        raise TunesmithError(f"eval.regression.lm_eval.tasks is set but lm-evaluation-harness cannot be imported ({e})",
                             hint=INSTALL_HINT) from None
    return lm_eval


@dataclass
class LmEvalTasks:
    """The resolved task set and how to run it; :meth:`score` runs it on one loaded model."""

    names: tuple[str, ...]
    manager: Any  # lm_eval.tasks.TaskManager
    cfg: LmEvalConfig
    batch_size: int
    seed: int
    bootstrap_iters: int
    version: str

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the run (regression.lm_eval)."""
        return {"tasks": list(self.names), "limit": self.cfg.limit, "num_fewshot": self.cfg.num_fewshot,
                "apply_chat_template": self.cfg.apply_chat_template, "lm_eval_version": self.version,
                "runner": "lm-eval HFLM on the models loaded by tunesmith eval"}

    def score(self, model, tokenizer) -> dict[str, dict[str, Any]]:
        """Every task on ``model`` (a transformers or PEFT model): :func:`task_scores` of lm-eval's results."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        was_training = model.training
        try:
            with _lm_eval_noise_silenced():
                lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=self.batch_size)
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=list(self.names), task_manager=self.manager, limit=self.cfg.limit,
                    num_fewshot=self.cfg.num_fewshot, apply_chat_template=self.cfg.apply_chat_template,
                    log_samples=False, bootstrap_iters=self.bootstrap_iters, random_seed=self.seed,
                    numpy_random_seed=self.seed, torch_random_seed=self.seed, fewshot_random_seed=self.seed)
        finally:
            model.train(was_training)  # HFLM puts the model in eval mode
        return task_scores(out)


def resolve_tasks(cfg: LmEvalConfig, include_paths: list[Path], *, batch_size: int, seed: int,
                  bootstrap_iters: int) -> LmEvalTasks:
    """Check lm-eval is installed and every task name exists (before any model loads); a clear error if not."""
    lm_eval = _lm_eval()
    from lm_eval.tasks import TaskManager

    for p in include_paths:
        if not p.is_dir():
            raise ConfigError(f"eval.regression.lm_eval.include_path: {p} is not a folder",
                              hint="a folder of lm-eval task YAML files, relative to the config file")
    paths = [str(SHIPPED_TASKS), *map(str, include_paths)]
    manager = TaskManager(include_path=paths, include_defaults=False)  # fast: only these folders
    if any(t not in manager.all_tasks for t in cfg.tasks):
        manager = TaskManager(include_path=paths, include_defaults=True)  # lm-eval's own list (~10 s to index)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        near = [f"{t} -> {c}" for t in unknown if (c := closest(t, manager.all_tasks))]
        raise ConfigError(
            f"eval.regression.lm_eval.tasks: unknown lm-eval task(s) {', '.join(unknown)}: not in the shipped tasks "
            f"({SHIPPED_TASKS}), include_path, or lm-eval's task list",
            hint=("did you mean " + ", ".join(near) + "? " if near else "")
            + "`lm-eval ls tasks` lists lm-eval's names; your own task YAMLs go in "
            "eval.regression.lm_eval.include_path")
    try:  # each task's data read (hub tasks: downloaded) now, before any model loads; simple_evaluate reuses it
        with _lm_eval_noise_silenced():
            manager.load(list(cfg.tasks))
    except (ConnectionError, FileNotFoundError) as e:  # the hub's OfflineModeIsEnabled; datasets' missing data files
        raise TunesmithError(
            f"eval.regression.lm_eval: lm-eval could not load the data of {', '.join(cfg.tasks)}: {e}",
            hint="lm-eval's own tasks download their datasets from the Hugging Face hub on first use: run once online "
            "(without HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); a local task's data_files must be absolute paths",
        ) from None
    return LmEvalTasks(tuple(cfg.tasks), manager, cfg, batch_size, seed, bootstrap_iters,
                       getattr(lm_eval, "__version__", "unknown"))


def _number(x: Any) -> float | None:
    """A finite float, or None (lm-eval writes "N/A" for a standard error it did not compute)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else None


def task_scores(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {"n", "group"?, "metrics": {metric: {"value", "stderr", "higher_is_better"}}}}`` from lm-eval's
    ``simple_evaluate`` output. A metric is named as lm-eval names it, its filter kept when not ``none``
    (``exact_match,strict-match``). A task or group inside a scored group carries ``group`` (the report and the
    forgetting flags use the named tasks and groups only)."""
    scored = results["results"]
    parent = {sub: g for g, subs in results.get("group_subtasks", {}).items() if g in scored for sub in subs}
    better = results.get("higher_is_better", {})
    out: dict[str, dict[str, Any]] = {}
    for task, row in scored.items():
        metrics: dict[str, dict[str, Any]] = {}
        for key, value in row.items():
            if "," not in key or "_stderr," in key or _number(value) is None:
                continue
            metric, filt = key.split(",", 1)
            metrics[key if filt != "none" else metric] = {
                "value": float(value), "stderr": _number(row.get(f"{metric}_stderr,{filt}")),
                "higher_is_better": better.get(task, {}).get(metric)}
        entry: dict[str, Any] = {"n": row.get("sample_len"), "metrics": metrics}
        if task in parent:
            entry["group"] = parent[task]
        out[task] = entry
    return out


@contextlib.contextmanager
def _lm_eval_noise_silenced() -> Iterator[None]:
    class Drop(logging.Filter):
        def __init__(self, prefix: str):
            super().__init__()
            self.prefix = prefix

        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.msg).startswith(self.prefix)

    filters = [(logging.getLogger(name), Drop(prefix)) for name, prefix in _NOISE]
    for logger, f in filters:
        logger.addFilter(f)
    try:
        yield
    finally:
        for logger, f in filters:
            logger.removeFilter(f)
