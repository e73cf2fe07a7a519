"""The measured tables in README.md and the Performance page are rendered from the measuring
commands' output files, never copied by hand: a stale table fails ``make docs``."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def gen_results() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_results", REPO / "docs" / "gen_results.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_in_the_repository_matches_its_source() -> None:
    gen = gen_results()
    for path, renderers in gen.blocks().items():
        text = path.read_text()
        assert gen.render(text, renderers) == text, f"{path.name}: run make results"


def test_a_new_measurement_changes_the_readme_table() -> None:
    gen = gen_results()
    metrics = json.loads(gen.METRICS.read_text())
    changed = copy.deepcopy(metrics)
    pooled = changed["leave_model_out"][gen.SURVIVAL]["held_out"][gen.POOLED]
    pooled["detection"]["model"]["FA 1%"] = 0.5
    text = gen.README.read_text()
    fresh = gen.render(text, {"results": lambda: gen.readme_results(changed)})
    assert "| fleetpulse disk model |" in fresh
    assert "50.0 %" in fresh
    assert fresh != text


def test_blocks_without_a_source_are_left_alone() -> None:
    gen = gen_results()
    text = "a\n<!-- generated:stream -->\nold\n<!-- /generated:stream -->\nb\n"
    assert gen.render(text, {}) == text
    assert gen.render(text, {"stream": lambda: "new\n"}) == text.replace("old", "new")


def test_sizing_plans_each_worker_at_the_target_utilisation() -> None:
    gen = gen_results()
    assert gen.workers_for(100, 2000) == 1
    assert gen.workers_for(1667, 2000) == 3  # 1,667 / (2,000 x 0.3) = 2.8
    assert gen.workers_for(16_667, 2000) == 28


def test_sizing_plans_with_the_costlier_of_draining_and_keeping_up() -> None:
    gen = gen_results()
    throughput = {"results": {"pipeline_eps_per_cpu_s": 2000}}  # 500 µs per event while draining
    keeping_up = {"results": {"latency_1x": {"achieved_rate": 333, "worker_cpu_us_per_report": 1000.0}}}
    assert "| 100,000 devices, a report a minute | 1,667 | 6 |" in gen.sizing_table(throughput, keeping_up)
    assert "| 100,000 devices, a report a minute | 1,667 | 3 |" in gen.sizing_table(throughput, None)
    cheaper = {"results": {"latency_1x": {"achieved_rate": 333, "worker_cpu_us_per_report": 400.0}}}
    assert "| 100,000 devices, a report a minute | 1,667 | 3 |" in gen.sizing_table(throughput, cheaper)
