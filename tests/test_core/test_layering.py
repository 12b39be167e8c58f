"""The layering: reading a config, the CLI and `tunesmith advise` load no torch; the import contracts
in pyproject.toml ([tool.importlinter]) hold, and a violation fails them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes", "deepspeed")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def _heavy_after_import(module: str) -> list[str]:
    """The heavy packages in sys.modules after importing ``module`` in a fresh interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", [
    "tunesmith.config", "tunesmith.cli", "tunesmith.models", "tunesmith.estimate.memory", "tunesmith.estimate.cost",
    "tunesmith.advise.cli", "tunesmith.advise.recommend", "tunesmith.advise.render", "tunesmith.advise.runconfig",
    "tunesmith.advise.dataset", "tunesmith.models.quantization", "tunesmith.advise.advisor", "tunesmith.advise.evalplan",
    "tunesmith.advise.machine", "tunesmith.data.answer_schema", "tunesmith.estimate.recipe",
])
def test_config_cli_and_advise_load_without_torch(module):
    assert _heavy_after_import(module) == []


def test_reading_a_config_and_planning_load_without_torch(tmp_path):
    """A config read and validated, and an estimate made, with no torch in the process."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: t\ntrain: {method: qlora, batch_size: 2}\n")
    code = (
        "import json, sys\n"
        "from tunesmith.config import load_config\n"
        "from tunesmith.estimate.arch import Architecture\n"
        "from tunesmith.estimate.memory import estimate_memory\n"
        f"cfg = load_config({str(cfg)!r})\n"
        "est = estimate_memory(Architecture.from_catalog('llama-3.1-8b'), method=cfg.train.method)\n"
        f"print(json.dumps([cfg.train.method, est.total_bytes > 0, sorted(m for m in {HEAVY!r} if m in sys.modules)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["qlora", True, []]


# ---------------------------------------------------------------------------- import contracts


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: pip install -e '.[test]' (import-linter is in the test extra)")
    env = {**_env(), "PYTHONPATH": str(root / "src")}
    return subprocess.run([exe, "--config", str(root / "pyproject.toml"), "--no-cache"], capture_output=True,
                          text=True, cwd=root, env=env)


def test_import_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout and "0 broken" in r.stdout


def _copy_project(tmp_path: Path) -> Path:
    dst = tmp_path / "project"
    shutil.copytree(SRC, dst / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


@pytest.mark.parametrize(("module", "line", "contract"), [
    # a module-level torch import in the config reader: every command would pay for torch again
    ("config.py", "import torch  # noqa", "Reading a config, the CLI, advise and the estimator load no torch"),
    # the re-export that made `import tunesmith.config` load torch
    ("models/__init__.py", "from tunesmith.models.loading import load_model  # noqa",
     "Reading a config, the CLI, advise and the estimator load no torch"),
    # train reaching into advise instead of the neutral estimator
    ("train/preflight.py", "import tunesmith.advise.recommend  # noqa", "Training does not depend on advise"),
    # a lower layer importing a higher one
    ("estimate/cost.py", "import tunesmith.pipeline  # noqa", "Layers: cli > pipeline > stages > config > estimate > models > base"),
])
def test_import_contracts_fail_on_a_violation(tmp_path, module, line, contract):
    project = _copy_project(tmp_path)
    path = project / "src" / "tunesmith" / module
    text = path.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest if sep else line + "\n" + text)
    r = _lint_imports(project)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{contract} BROKEN" in r.stdout
