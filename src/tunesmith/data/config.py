from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.data.pii import ALL_TYPES, DEFAULT_REPORT_ONLY
from tunesmith.schema import Section

# auto: the file's format is detected from its first rows and every row must have it;
# mixed: detected row by row (for files that mix formats on purpose)
FormatName = Literal["auto", "mixed", "alpaca", "openai", "sharegpt", "completion", "text"]
# auto: the file's rows are split by data.validation_fraction / data.test_fraction; validation / test: the whole
# file is that split, as given (never re-split)
SplitName = Literal["auto", "validation", "test"]
ContainerName = Literal["auto", "jsonl", "json", "csv", "parquet"]


class InputFile(Section):
    """One input file; several may be listed under ``data.files``."""

    path: str = Field(description="File path (.jsonl/.json/.csv/.parquet, optionally .gz); relative to the config file.")
    format: FormatName = Field("auto", description="Row format; auto detects it from the file's first rows, mixed row by row.")
    container: ContainerName = Field("auto", description="File type; auto uses the extension.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Rename keys before reading: {canonical_key: key_in_your_file}, e.g. {instruction: question, output: answer}.",
    )
    split: SplitName = Field(
        "auto", description="auto: split by the fractions; validation / test: the whole file is that split, used as given "
        "(validated and deduplicated against train like every row, never re-split).",
    )


class DedupConfig(Section):
    """Exact (normalised-text hash) and near-duplicate (MinHash/LSH) removal; first occurrence wins."""

    exact: bool = True
    near: bool = True
    threshold: float = Field(0.85, gt=0.0, le=1.0, description="Estimated Jaccard similarity of word shingles at which two texts are near-duplicates.")
    exact_scope: list[Literal["example", "prompt"]] = Field(
        default_factory=lambda: ["example", "prompt"],
        description="What exact dedup compares: the whole example and/or only the prompt side (same prompt = conflicting answers).",
    )
    near_scope: list[Literal["example", "prompt"]] = Field(
        default_factory=lambda: ["example"], description="What near dedup compares (prompt side is aggressive on templated data)."
    )
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations.")
    shingle: int = Field(3, ge=1, le=10, description="Words per shingle.")
    cross_split: bool = Field(True, description="Check that no test/validation example has a near-duplicate in train (leakage).")
    cross_split_action: Literal["remove", "report"] = Field(
        "remove", description="remove: drop leaking test/validation examples (counted); report: only count them."
    )


class PiiConfig(Section):
    """Find personal data and secrets; replace them with numbered placeholders such as <EMAIL_1> (the same
    value gets the same placeholder in every message of a record)."""

    mode: Literal["redact", "report", "off"] = Field("redact", description="redact: replace; report: count only; off: skip.")
    types: list[str] = Field(default_factory=lambda: list(ALL_TYPES), description="Which kinds to look for.")
    report_only: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REPORT_ONLY),
        description="Kinds that are found and counted but never replaced. PERSON by default: names are found by cue only "
        "(measured precision in docs/data.md), and a wrong name placeholder damages the task. [] redacts names too.",
    )
    phone_region: str = Field("US", description="Default region for phone numbers written without +country code.")

    @field_validator("types", "report_only")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in ALL_TYPES]
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; choose from {', '.join(ALL_TYPES)}")
        return v


class ConsistencyConfig(Section):
    label_field: str | None = Field(
        None, description="Input key with a class label (defaults to stratify_field); its set and distribution are reported."
    )
    json_schema: dict[str, Any] | str | None = Field(
        None, description="JSON Schema (inline, or a path to a .json file) the assistant answers must satisfy."
    )
    json_schema_action: Literal["report", "reject"] = Field("report", description="What to do with answers failing the schema.")


# data.mix.ratio when train.forgetting_guard is on and the ratio is not given (measured: docs/forgetting.md)
GUARDED_MIX_RATIO = 0.2


class MixConfig(Section):
    """Add general instruction data to train against catastrophic forgetting (never to validation/test)."""

    ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the final train split that is general data (0 = off). "
        f"Not given: {GUARDED_MIX_RATIO} when train.forgetting_guard is on (auto: lora/dora/qlora), else 0.",
    )
    source: str = Field(
        "chatterbot", description="'chatterbot' (the English chatterbot-corpus conversations, less a small fixed "
        "held-out set for evaluation) or a path to your own file or folder of general instructions in any supported "
        "format (rows that fail validation go to general_rejected.jsonl with file, line and reason).",
    )
    format: FormatName = "auto"
    eval_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Share of the general examples kept apart in general_eval.jsonl (never in test)."
    )

    def resolve_for_guard(self, guard_mode: str, asked: str) -> None:
        """Give the forgetting guard its general rows: the ratio defaults to GUARDED_MIX_RATIO when the guard is
        on; a guard asked for by name with the ratio set to 0 has nothing to act on and is refused."""
        if guard_mode == "off":
            return
        if "ratio" not in self.model_fields_set:
            self.ratio = GUARDED_MIX_RATIO
        elif self.ratio == 0 and asked != "auto":
            raise ValueError(f"train.forgetting_guard {asked} acts on general rows but data.mix.ratio is 0; "
                             f"set data.mix.ratio (e.g. {GUARDED_MIX_RATIO}) or train.forgetting_guard: off")


class DataConfig(Section):
    """Where the examples come from, how they are checked, cleaned, split and mixed."""

    train_file: str | None = Field(None, description="Input file; relative paths are relative to the config file.")
    validation_file: str | None = Field(
        None, description="Held-out validation file, used as given (never re-split); train_file then gives no validation rows "
        "(validation_fraction is not used). Same format/columns as train_file.",
    )
    test_file: str | None = Field(
        None, description="Held-out test file, used as given (never re-split); train_file then gives no test rows "
        "(test_fraction is not used). Same format/columns as train_file.",
    )
    files: list[InputFile] = Field(default_factory=list, description="More input files (each with its own format/columns).")
    format: FormatName = Field("auto", description="Row format of train_file; auto detects it from the first rows, mixed row by row.")
    columns: dict[str, str] = Field(default_factory=dict, description="Key mapping for train_file: {canonical_key: your_key}.")
    system_prompt: str | None = Field(None, description="System message added to every example that has none.")
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    stratify_field: str | None = Field(
        None, description="Key of each input row holding a label; splits keep each label's share."
    )
    max_examples: int | None = Field(None, gt=0, description="Use at most this many rows (after shuffling).")
    max_rejected_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Fail the run when more than this share of input rows is rejected."
    )
    max_line_bytes: int = Field(1_000_000, gt=0, description="Rows longer than this (bytes) are rejected.")
    fix_encoding: bool = Field(
        True, description="Remove a UTF-8 byte-order mark and convert Windows line endings (reported as warnings); false rejects those rows."
    )
    workers: int | None = Field(
        None, ge=1, le=64, description="Processes for reading/validating/PII/hashing; default: 1 for inputs under 64 MB, else one per core (max 4)."
    )
    check_length: bool = Field(True, description="Count tokens with the model's tokenizer and chat template.")
    report: bool = Field(True, description="Write report.md and report.html next to the prepared files.")
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    consistency: ConsistencyConfig = Field(default_factory=ConsistencyConfig)
    mix: MixConfig = Field(default_factory=MixConfig)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        val, test = self.split_fractions()
        if val + test >= 1.0:
            raise ValueError(
                f"validation_fraction ({self.validation_fraction}) + test_fraction ({self.test_fraction}) "
                "must be below 1, or nothing is left to train on"
            )
        return self

    def given_splits(self) -> set[str]:
        """The held-out splits that come from files of their own (validation_file, test_file, files with a split)."""
        return {spec.split for spec in self.inputs() if spec.split != "auto"}

    def split_fractions(self) -> tuple[float, float]:
        """(validation, test) fractions the split files' rows are split by: 0 for a split given by a file of its own."""
        given = self.given_splits()
        return (0.0 if "validation" in given else self.validation_fraction, 0.0 if "test" in given else self.test_fraction)

    def inputs(self, train_file: str | None = None) -> list[InputFile]:
        """Every input file, the held-out ones (validation_file, test_file, files with a split) first, so that an exact
        or near duplicate of a held-out row in the train pool is the one removed (the first occurrence wins); then
        train_file (``train_file`` replaces it when given) and the other ``files``. The top-level format/columns apply
        to train_file, validation_file and test_file."""
        top = {"format": self.format, "columns": self.columns}
        held = [InputFile(path=p, split=split, **top)
                for p, split in ((self.validation_file, "validation"), (self.test_file, "test")) if p]
        held += [f for f in self.files if f.split != "auto"]
        train = train_file or self.train_file
        pool = [InputFile(path=train, **top)] if train else []
        return held + pool + [f for f in self.files if f.split == "auto"]
