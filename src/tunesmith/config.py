"""The run config: one YAML file per run, validated by a pydantic schema.

Each workflow stage owns its section's schema (``tunesmith.<stage>.config``); this module composes
them, loads YAML, applies ``key.sub=value`` overrides, checks combinations that span sections,
and turns validation errors into messages that name the key's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from tunesmith.advise.config import AdviseConfig
from tunesmith.data.config import DataConfig
from tunesmith.deploy.config import ServeConfig
from tunesmith.errors import ConfigError, closest
from tunesmith.evaluate.config import EvalConfig
from tunesmith.models.config import ModelConfig
from tunesmith.schema import Section
from tunesmith.train.config import TrainConfig


class RunConfig(Section):
    """A whole run: model, data, training, evaluation."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9._-]+$", description="Run name (used for the output folder).")
    output_dir: str = Field("runs", description="Runs are written to <output_dir>/<name>; relative to the config file.")
    seed: int = Field(42, description="Seeds data splits, weight init of adapters, data order and sampling.")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    advise: AdviseConfig = Field(default_factory=AdviseConfig, description="Answers for `tunesmith advise` (optional).")
    serve: ServeConfig = Field(default_factory=ServeConfig)

    # Not part of the YAML: the folder relative paths are resolved against.
    base_dir: str = Field(".", exclude=True, description="(internal) folder of the config file")

    @model_validator(mode="after")
    def _cross_section_checks(self) -> RunConfig:
        self.data.mix.resolve_for_guard(self.train.guard_mode, self.train.forgetting_guard)
        if self.train.method == "qlora" and self.model.dtype == "float16" and self.model.device == "cpu":
            raise ValueError("qlora with float16 compute on CPU cannot train: use model.dtype float32 on CPU")
        if self.model.dtype == "float16" and self.train.method == "full":
            # bf16 full fine-tuning keeps fp32 master weights under autocast; fp16 would also need loss scaling
            raise ValueError(
                "full fine-tuning with model.dtype float16 is not supported (fp16 gradients underflow without "
                "loss scaling): use model.dtype bfloat16 (fp32 master weights, bf16 compute) or float32"
            )
        return self

    def resolve_path(self, p: str | None) -> Path | None:
        if p is None:
            return None
        path = Path(p).expanduser()
        return path if path.is_absolute() else (Path(self.base_dir) / path).resolve()

    @property
    def run_dir(self) -> Path:
        return self.resolve_path(self.output_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# loading and overrides


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.sub=value", hint="e.g. train.epochs=2")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = _parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[: i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _known_keys(model_cls: type[Section], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at ``loc`` (the parent of an unknown key), for 'did you mean' hints."""
    cls: Any = model_cls
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}).keys())


def format_validation_error(err: ValidationError, source: str, model_cls: type[Section] = RunConfig) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-after")))
        path = ".".join(str(x) for x in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = [k for k in _known_keys(model_cls, loc[:-1]) if k != "base_dir"]
            guess = closest(str(loc[-1]), known)
            tip = f" (did you mean '{guess}'?)" if guess else ""
            lines.append(f"  - {path}: unknown key{tip}; valid keys here: {', '.join(known)}")
        elif e["type"] == "value_error":
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"  - {path}: {msg}")
        else:
            lines.append(f"  - {path}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def build_config(data: dict[str, Any], *, source: str = "<dict>", base_dir: str | Path = ".") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"config {source} must be a mapping of sections (model:, data:, train:, eval:)")
    data = {k: v for k, v in data.items() if k != "base_dir"}
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
    cfg.base_dir = str(Path(base_dir).resolve())
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML run config (or defaults when ``path`` is None) and apply ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    base_dir: Path = Path.cwd()
    source = "(defaults)"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {p}{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
        data = loaded or {}
        base_dir = p.resolve().parent
        source = str(p)
    if overrides:
        data = apply_overrides(data if isinstance(data, dict) else {}, overrides)
    return build_config(data, source=source, base_dir=base_dir)
