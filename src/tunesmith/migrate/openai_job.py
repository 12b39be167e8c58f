"""`tunesmith import-job`: an OpenAI fine-tuning job (the JSON ``GET /v1/fine_tuning/jobs/{id}`` returns) turned into a
tunesmith run config, with a mapping table that says, setting by setting, what each job setting became or why it
cannot map.

The config is advise's run config for the job's training file (the recipe of estimate/recipe.py for everything the
job leaves "auto" or that has no meaning outside OpenAI), with the job's own settings where they map:
n_epochs -> train.epochs; batch_size (examples per optimizer step) -> train.batch_size x train.grad_accum with
packing off (so a step holds exactly that many examples); seed -> seed; suffix -> name; training_file /
validation_file -> data.train_file / data.validation_file (the local copies of the file ids).
Preference (DPO) and reinforcement jobs are recognised and refused: tunesmith trains supervised only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.formats import is_preference_row
from tunesmith.data.readers import ReadWarnings, iter_rows
from tunesmith.errors import ConfigError, DataError
from tunesmith.evaluate.config import EvalConfig

MICRO_BATCH = 4  # the recipe's rows per micro-batch (estimate/recipe.py MICRO_BATCH): the rest is accumulation
TRAINABLE_METHODS = ("supervised",)
DATA_SUFFIXES = ("", ".jsonl", ".json", ".jsonl.gz")


@dataclass(frozen=True)
class MappingRow:
    """One line of the mapping table: a job setting, its value, and what it became (or why it did not map)."""

    job_key: str
    job_value: Any
    tunesmith_key: str | None  # None: not mapped
    value: Any
    note: str


@dataclass(frozen=True)
class JobSettings:
    """What the importer reads from the job JSON."""

    job_id: str
    model: str
    method: str  # supervised | dpo | reinforcement
    hyperparameters: dict[str, Any]
    hyperparameters_key: str  # where they were found: method.<type>.hyperparameters or the legacy hyperparameters
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int | None
    fine_tuned_model: str | None
    status: str | None


def read_job(path: Path) -> JobSettings:
    """The job settings of an OpenAI fine-tuning job JSON file; a clear error for anything else."""
    try:
        job = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the job file {path}: {e.strerror or e}", hint="give the JSON of the fine-tuning job") from None
    except ValueError as e:
        raise ConfigError(f"{path} is not JSON: {e}",
                          hint="save the job as the API returns it: curl https://api.openai.com/v1/fine_tuning/jobs/ftjob-... "
                          "-H \"Authorization: Bearer $OPENAI_API_KEY\" > job.json") from None
    if not isinstance(job, dict) or not job.get("training_file") or not job.get("model"):
        raise ConfigError(f"{path} is not an OpenAI fine-tuning job: it has no 'model' and 'training_file'",
                          hint="give the JSON the API returns for GET /v1/fine_tuning/jobs/{id} (object: fine_tuning.job)")
    method = job.get("method") or {}
    mtype = method.get("type") or "supervised"
    hp_key, hp = "hyperparameters", job.get("hyperparameters") or {}
    inner = (method.get(mtype) or {}).get("hyperparameters")
    if inner:
        hp_key, hp = f"method.{mtype}.hyperparameters", inner
    return JobSettings(job_id=str(job.get("id") or Path(path).stem), model=str(job["model"]), method=mtype, hyperparameters=hp,
                       hyperparameters_key=hp_key, training_file=str(job["training_file"]),
                       validation_file=job.get("validation_file") or None, suffix=job.get("suffix") or None,
                       seed=job.get("seed"), fine_tuned_model=job.get("fine_tuned_model") or None, status=job.get("status"))


def parse_file_map(pairs: list[str]) -> dict[str, Path]:
    """``--files file-abc=path.jsonl`` pairs as {file id: path}."""
    out = {}
    for pair in pairs:
        fid, sep, path = pair.partition("=")
        if not sep or not fid.strip() or not path.strip():
            raise ConfigError(f"--files {pair!r} is not FILE_ID=PATH", hint="e.g. --files file-abc123=train.jsonl")
        out[fid.strip()] = Path(path.strip()).expanduser()
    return out


def local_file(file_id: str, files: dict[str, Path], folder: Path | None, role: str) -> Path:
    """The local copy of the OpenAI file ``file_id``: from ``--files``, else ``folder/<file id>[.jsonl|.json]``."""
    if file_id in files:
        path = files[file_id]
    else:
        found = [folder / f"{file_id}{s}" for s in DATA_SUFFIXES] if folder is not None else []
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            where = f" (looked in {folder} for {file_id}, {file_id}.jsonl, {file_id}.json)" if folder is not None else ""
            raise ConfigError(f"the job's {role} {file_id} has no local copy{where}",
                              hint=f"download it (GET /v1/files/{file_id}/content) and pass --files {file_id}=PATH "
                              "or --files-dir FOLDER with files named by id")
    if not path.is_file():
        raise ConfigError(f"{role} {file_id}: {path} does not exist", hint="check the path given with --files")
    return path.resolve()


def is_preference_file(path: Path) -> bool:
    """Whether the first readable row of ``path`` is a preference (DPO) row."""
    for raw in iter_rows(path, max_line_bytes=10_000_000, warnings=ReadWarnings()):
        if raw.row is not None:
            return is_preference_row(raw.row)
    return False


def run_name(job: JobSettings) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", job.suffix or job.job_id).strip("-.")
    return name or "imported-job"


def step_shape(batch_size: int) -> tuple[int, int]:
    """(train.batch_size, train.grad_accum) whose product is exactly ``batch_size`` examples, micro-batches of at
    most MICRO_BATCH rows (the largest divisor of ``batch_size`` up to it)."""
    micro = max(d for d in range(1, min(MICRO_BATCH, batch_size) + 1) if batch_size % d == 0)
    return micro, batch_size // micro


def _explicit(value: Any) -> bool:
    return value is not None and value != "auto"


def job_overrides(job: JobSettings) -> dict[str, Any]:
    """The run config keys the job sets itself (the rest is advise's recipe)."""
    hp = job.hyperparameters
    train: dict[str, Any] = {}
    if _explicit(hp.get("n_epochs")):
        train["epochs"] = float(hp["n_epochs"])
    if _explicit(hp.get("batch_size")):
        train["batch_size"], train["grad_accum"] = step_shape(int(hp["batch_size"]))
        train["packing"] = False
    d: dict[str, Any] = {"name": run_name(job), "train": train}
    if job.seed is not None:
        d["seed"] = int(job.seed)
    return d


def refuse_untrainable_method(job: JobSettings) -> None:
    """Preference (DPO) and reinforcement jobs are not trainable here: say so, never misread them."""
    if job.method not in TRAINABLE_METHODS:
        raise ConfigError(
            f"job {job.job_id} is a {job.method} fine-tuning job (method.type: {job.method}); tunesmith trains supervised "
            "jobs only, so it is not yet trainable here",
            hint="a preference (DPO) job's file holds input / preferred_output / non_preferred_output rows; tunesmith does "
            "not train on preference pairs yet (see docs/data.md#preference-dpo-files)")


def refuse_preference_file(train_path: Path) -> None:
    """A preference (DPO) file behind a job that says supervised is not misread either."""
    if is_preference_file(train_path):
        raise DataError(
            f"{train_path} holds preference (DPO) rows (input / preferred_output / non_preferred_output), though the job "
            "says supervised; tunesmith does not train on preference pairs yet",
            hint="give the supervised training file ({messages: [...]} rows) of the job")


def mapping_rows(job: JobSettings, cfg: RunConfig, choices: dict[str, str], files: dict[str, Path]) -> list[MappingRow]:
    """The mapping table: every job setting, what it became in ``cfg`` and why (``choices``: advise's reason per key)."""
    hp, hk, t = job.hyperparameters, job.hyperparameters_key, cfg.train
    rows = [
        MappingRow("model", job.model, "model.name_or_path", cfg.model.name_or_path,
                   "OpenAI's weights cannot be downloaded: an open model is fine-tuned instead (--model chooses it)"),
        MappingRow("method.type", job.method, "train.method", t.method,
                   f"supervised fine-tuning with {t.method} ({choices.get('train.method', 'the config default')})"),
        MappingRow("training_file", job.training_file, "data.train_file", str(files["training_file"]), "the local copy of the file"),
    ]
    if job.validation_file:
        rows.append(MappingRow("validation_file", job.validation_file, "data.validation_file", str(files["validation_file"]),
                               "used as given (never re-split); train rows duplicating it are removed from train"))
    else:
        rows.append(MappingRow("validation_file", None, "data.validation_fraction", cfg.data.validation_fraction,
                               "no validation file: a seeded share of the training file is held out"))
    rows.append(_epochs_row(hp.get("n_epochs"), hk, t.epochs, choices))
    rows.append(_batch_row(hp.get("batch_size"), hk, t.batch_size, t.grad_accum, t.packing, choices))
    rows.append(MappingRow(f"{hk}.learning_rate_multiplier", hp.get("learning_rate_multiplier", "auto"), "train.lr", t.lr,
                           "no meaning outside OpenAI (a multiplier of their undisclosed base rate); the recipe's rate is "
                           f"used instead: {choices.get('train.lr', 'the config default')}"))
    if "beta" in hp:
        rows.append(MappingRow(f"{hk}.beta", hp["beta"], None, None, "DPO only: not trainable here"))
    rows.append(MappingRow("seed", job.seed, "seed" if job.seed is not None else None, cfg.seed,
                           "the same seed (splits, adapter init, data order; results still differ from OpenAI's)"
                           if job.seed is not None else "not in the job: tunesmith's default seed"))
    rows.append(MappingRow("suffix", job.suffix, "name", cfg.name, "the run name (run folder)" if job.suffix else "no suffix: the job id names the run"))
    ref = next((e for e in cfg.eval.endpoints if e.name == REFERENCE_NAME), None)
    if job.fine_tuned_model and ref is not None:
        where = ReferenceEndpoint(ref.base_url, ref.model, ref.api_key_env or "").describe()
        asked = "" if ref.model == job.fine_tuned_model else f" as model {ref.model}"
        rows.append(MappingRow("fine_tuned_model", job.fine_tuned_model, "eval.parity.reference", REFERENCE_NAME,
                               f"the endpoint {REFERENCE_NAME} ({where}{asked}) is evaluated beside the tuned "
                               "model and is the parity certificate's reference (--no-reference leaves it out); capture "
                               f"its answers while it still answers: tunesmith data capture --base-url {ref.base_url} "
                               f"--model {ref.model} ..."))
    else:
        rows.append(MappingRow("fine_tuned_model", job.fine_tuned_model, None, None,
                               "not compared (--no-reference); capture its answers while it still answers: tunesmith data "
                               f"capture --model {job.fine_tuned_model} ..." if job.fine_tuned_model else "the job made no model"))
    if job.status and job.status != "succeeded":
        rows.append(MappingRow("status", job.status, None, None, "the job did not succeed: its settings are imported all the same"))
    return rows


REFERENCE_NAME = "ft-model"
OPENAI_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class ReferenceEndpoint:
    """Where the job's fine-tuned model answers: OpenAI by default; an Azure OpenAI deployment, a proxy or a
    stand-in server otherwise (``model`` None: the job's ``fine_tuned_model``; ``api_key_env`` "": no key)."""

    base_url: str = OPENAI_BASE_URL
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    usd_per_million_input_tokens: float | None = None  # what the team pays for the ft: model, for the cost comparison
    usd_per_million_output_tokens: float | None = None

    def describe(self) -> str:
        where = "OpenAI" if self.base_url == OPENAI_BASE_URL else self.base_url
        key = f"key from ${self.api_key_env}" if self.api_key_env else "no key"
        return f"{where}, {key}"


def add_reference(out: dict[str, Any], fine_tuned_model: str, endpoint: ReferenceEndpoint = ReferenceEndpoint()) -> None:
    """The job's ft: model as an evaluation endpoint and the parity certificate's reference: `tunesmith eval` then
    says whether the replacement is not worse (its answers are cached, so the evaluation still runs once it is gone)."""
    ev = out.setdefault("eval", {})
    ev["endpoints"] = [*ev.get("endpoints", []), {"name": REFERENCE_NAME, "base_url": endpoint.base_url,
                                                   "model": endpoint.model or fine_tuned_model,
                                                   "api_key_env": endpoint.api_key_env or None,
                                                   **{k: v for k, v in (
                                                       ("usd_per_million_input_tokens", endpoint.usd_per_million_input_tokens),
                                                       ("usd_per_million_output_tokens", endpoint.usd_per_million_output_tokens))
                                                      if v is not None}}]
    ev["models"] = [*ev.get("models", EvalConfig().models), REFERENCE_NAME]
    ev["parity"] = {"reference": REFERENCE_NAME, "candidate": "tuned", "margin_points": 2.0}


def mapping_line(row: MappingRow) -> str:
    """One table row as one line: ``job_key = value -> tunesmith_key = value: note`` (or ``-> not mapped: why``)."""
    target = f"{row.tunesmith_key} = {row.value}" if row.tunesmith_key else "not mapped"
    return f"{row.job_key} = {json.dumps(row.job_value)} -> {target}: {row.note}"


def _epochs_row(value: Any, hk: str, epochs: float, choices: dict[str, str]) -> MappingRow:
    if _explicit(value):
        return MappingRow(f"{hk}.n_epochs", value, "train.epochs", epochs, "the same number of passes over the training file")
    return MappingRow(f"{hk}.n_epochs", value or "auto", "train.epochs", epochs,
                      f"auto: the recipe's epochs ({choices.get('train.epochs', 'the config default')})")


def _batch_row(value: Any, hk: str, batch: int, accum: int, packing: bool, choices: dict[str, str]) -> MappingRow:
    key = "train.batch_size x train.grad_accum"
    if _explicit(value):
        return MappingRow(f"{hk}.batch_size", value, key, f"{batch} x {accum}",
                          f"{batch * accum} examples per optimizer step, as in the job (train.packing: false, so a row is one example)")
    return MappingRow(f"{hk}.batch_size", value or "auto", key, f"{batch} x {accum}",
                      f"auto: the recipe's step ({choices.get('train.batch_size', 'the config default')}; packing {'on' if packing else 'off'})")


def import_job(job_path: Path, output: Path, *, files: dict[str, Path], files_dir: Path | None,
               model: str | None, reference: bool = True,
               reference_endpoint: ReferenceEndpoint = ReferenceEndpoint()) -> tuple[RunConfig, list[MappingRow]]:
    """Write the run config of the job at ``job_path`` to ``output`` and return it with the mapping table."""
    from tunesmith.advise.advisor import build_advice
    from tunesmith.advise.runconfig import run_config_dict, write_run_config
    from tunesmith.config import build_config

    job = read_job(job_path)
    refuse_untrainable_method(job)
    local = {"training_file": local_file(job.training_file, files, files_dir, "training_file")}
    if job.validation_file:
        local["validation_file"] = local_file(job.validation_file, files, files_dir, "validation_file")
    refuse_preference_file(local["training_file"])
    config_dir = output.resolve().parent
    d = job_overrides(job)
    if model:
        d["model"] = {"name_or_path": model}
    if "validation_file" in local:
        d["data"] = {"validation_file": os.path.relpath(local["validation_file"], config_dir)}
    base = build_config(d, source=f"job {job.job_id}", base_dir=config_dir)
    advice = build_advice(base, base.advise.model_copy(update={"recipe": "auto"}), data_path=local["training_file"],
                          gpu_catalog=base.advise.gpu_catalog, stratify_field=None, probe=False)
    out = run_config_dict(advice, base, config_dir=config_dir, data_path=local["training_file"])
    if reference and job.fine_tuned_model:
        add_reference(out, job.fine_tuned_model, reference_endpoint)
    cfg = write_run_config(output, out)
    choices = {c.key: c.reason for c in cfg.advise.choices}
    return cfg, mapping_rows(job, cfg, choices, local)
