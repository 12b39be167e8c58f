"""benchmarks/gpu_check.py --cpu-dry-run: the GPU check's own code, on tiny models on the CPU, so the script that
gets a few minutes on a GPU cannot arrive there broken."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
METHODS = ("lora", "qlora", "dora", "full")
MODELS = ("llama-3.2-1b", "llama-3.1-8b")


def run_check(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
           "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


def section_status(out: str, name: str) -> str:
    """The status line the runner prints after each section ('-- <name>: ok (1.2s)')."""
    assert f"\n== {name} ==" in out, f"section '{name}' never started"
    m = re.search(rf"^-- {re.escape(name)}: (ok|skipped|FAILED) \(", out, re.M)
    assert m, f"section '{name}' printed no result"
    return m.group(1)


def section_text(out: str, name: str) -> str:
    start = out.index(f"\n== {name} ==")
    return out[start:out.index(f"\n-- {name}: ", start)]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    proc = run_check(tmp, "--json", str(tmp / "out.json"))
    out = proc.stdout + proc.stderr
    return proc, out, json.loads((tmp / "out.json").read_text()) if (tmp / "out.json").is_file() else None


def test_dry_run_exits_0_and_every_section_reports(dry_run):
    proc, out, _ = dry_run
    assert proc.returncode == 0, out[-6000:]
    for name in ("env", "data", "plan", "packed-attention llama-3.2-1b", "generate llama-3.2-1b",
                 "serve llama-3.2-1b", "nccl"):
        assert section_status(out, name) == "ok", section_text(out, name)[-3000:]
    for model in MODELS:
        for method in METHODS:
            section_status(out, f"train {model} {method}")
        section_status(out, f"trl {model}")
        section_status(out, f"trl+liger {model}")
    assert "== summary ==" in out and re.search(r"config\s+status\s+tokens/s\s+MFU%", out)


def test_training_sections_assert_loss_and_changed_weights_and_report_speed_and_memory(dry_run):
    _, out, _ = dry_run
    for model in MODELS:
        for method in METHODS:
            name = f"train {model} {method}"
            status, text = section_status(out, name), section_text(out, name)
            if (model, method) == ("llama-3.1-8b", "full"):  # 8B full fine-tuning does not fit an H200
                assert status == "skipped" and "does not fit" in status_line(out, name)
                continue
            if method == "qlora" and status == "skipped":
                assert "bitsandbytes: not installed" in out
                continue
            assert status == "ok", text[-3000:]
            assert "(finite, decreasing)" in text
            assert re.search(r"(\d+)/\1 trainable tensors changed", text), text[-2000:]
            assert re.search(r"[\d,]+ tokens/s .* MFU [\d.]+%", text)
            assert re.search(r"pre-flight estimate [\d.]+ GiB = [\d.]+x measured", text)


def status_line(out: str, name: str) -> str:
    return out.split(f"\n-- {name}: ")[1].splitlines()[0]


def test_trl_baseline_prints_its_ratio_or_says_it_is_not_installed(dry_run):
    _, out, _ = dry_run
    for model in MODELS:
        name = f"trl {model}"
        if section_status(out, name) == "ok":
            assert re.search(r"tunesmith/TRL = [\d.]+x", section_text(out, name)), section_text(out, name)[-3000:]
        else:
            assert "TRL: not installed, skipped" in status_line(out, name)
        liger = f"trl+liger {model}"
        assert section_status(out, liger) == "skipped" and "Liger" in status_line(out, liger)  # Triton: CUDA only


def test_json_has_the_summary_table(dry_run):
    _, _, res = dry_run
    assert res is not None and res["mode"] == "cpu-dry-run"
    rows = {r["config"]: r for r in res["summary"]}
    lora = rows["llama-3.2-1b lora"]
    assert lora["status"] == "ok" and lora["tokens_per_s"] > 0 and lora["mfu"] > 0
    assert lora["estimate_gib"] > 0 and lora["estimate_over_measured"] > 0
    assert rows["llama-3.1-8b full"]["status"] == "skipped"
    assert {s["name"]: s["status"] for s in res["sections"]}["nccl"] == "ok"


def test_time_guard_skips_what_would_overrun_and_still_summarises(tmp_path):
    proc = run_check(tmp_path, "--models", "llama-3.2-1b", "--budget-s", "0.01", "--json", str(tmp_path / "o.json"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert section_status(out, "plan") == "ok"  # set-up always runs
    for name in ("train llama-3.2-1b lora", "serve llama-3.2-1b", "nccl"):
        assert section_status(out, name) == "skipped"
        assert "time guard" in status_line(out, name)
    assert "== summary ==" in out
    assert all(s["status"] == "skipped" for s in json.loads((tmp_path / "o.json").read_text())["sections"][3:])


def test_watchdog_stops_a_run_past_its_hard_limit_with_a_summary(tmp_path):
    proc = run_check(tmp_path, "--models", "llama-3.2-1b", "--hard-limit-s", "1", "--json", str(tmp_path / "o.json"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-4000:]
    assert "stopping here" in out and "== summary ==" in out
    sections = json.loads((tmp_path / "o.json").read_text())["sections"]
    assert any(s["reason"] == "stopped by the time guard" for s in sections)
