"""benchmarks/adversarial.py without training: seeding and the method's model, the report maths, mixed settings."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("adversarial")


ADV = {"steps": 1, "epsilon": {"text": 0.5, "image": 2.0}, "step_size": None, "norm": "l2", "kl_weight": 1.0,
       "modalities": ["text", "image"], "init_std": 0.0}  # fmt: skip


def _cell(tmp_path, method, seed, tests, median, adversarial=ADV, steps_per_round=500):
    rows = [
        {"round": i, "sparsity": s, "val": t, "test": t, "test_by_type": {"color": t, "yesno": 1.0 - t}}
        for i, (s, t) in enumerate(zip((0.0, 0.334, 0.7), tests, strict=True))
    ]
    cell = {"name": f"{method}-seed{seed}", "method": method, "seed": seed, "rows": rows, "seconds": 60.0,
            "steps_per_round": steps_per_round, "step_seconds_median": median, "threads": 1,
            "command": f"python benchmarks/adversarial.py --seeds {seed}",
            "adversarial": adversarial if method == "adversarial" else None}  # fmt: skip
    (tmp_path / f"{cell['name']}.json").write_text(json.dumps(cell))


def test_report_maths_against_hand_computed_values(bench, tmp_path):
    _cell(tmp_path, "standard", 0, (0.90, 0.90, 0.80), median=0.5)
    _cell(tmp_path, "standard", 1, (0.80, 0.80, 0.70), median=0.7)
    _cell(tmp_path, "adversarial", 0, (0.90, 0.90, 0.90), median=2.0)
    _cell(tmp_path, "adversarial", 1, (0.70, 0.80, 0.78), median=2.4)
    (tmp_path / "adversarial-seed2.lock").write_text("1")  # a run in progress elsewhere is not a result
    out = tmp_path / "out" / "adversarial"
    args = bench.parse_args(["--cache", str(tmp_path), "--out", str(out), "--report-only"])
    summary = bench.report(args, tmp_path, verbose=False)
    table = {r["sparsity"]: r for r in summary["table"]}
    assert table[0.7]["standard"]["mean"] == pytest.approx(0.75)
    assert table[0.7]["standard"]["std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std of (0.8, 0.7)
    assert table[0.7]["adversarial"]["mean"] == pytest.approx(0.84) and table[0.7]["adversarial"]["n"] == 2
    assert table[0.7]["adversarial"]["by_type"]["yesno"] == pytest.approx(0.16)
    # relaxed winner: sparsest round with mean >= 0.99 x the method's own dense mean (0.85 and 0.80)
    assert summary["relaxed_winning_sparsity"] == {"standard": 0.334, "adversarial": 0.7}
    # time ratio: median of the per-run medians (0.6 s and 2.2 s)
    assert summary["time_ratio"] == pytest.approx(2.2 / 0.6)
    assert summary["per_seed"]["1"]["adversarial"]["0.7"] == 0.78 and summary["seeds"] == [0, 1]
    assert summary["adversarial"] == ADV and summary["threads_per_process"] == [1] and summary["cpu_minutes"] == 4.0
    text = out.with_suffix(".md").read_text()
    assert "| 70.0% | 75.0 ± 7.1 (n=2) | 84.0 ± 8.5 (n=2) | +9.0 |" in text
    assert "standard **33.4%**, adversarial **70.0%**" in text and "adversarial / standard = 3.67×" in text
    assert "| 1 | 80.0 / 70.0 | 80.0 / 80.0 | 70.0 / 78.0 |" in text
    assert "| 70.0% | adversarial | 84.0 | 16.0 |" in text
    assert "    python benchmarks/adversarial.py --seeds 0" in text
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == [
        "adversarial-seed0", "adversarial-seed1", "standard-seed0", "standard-seed1"
    ]  # fmt: skip


def test_report_refuses_runs_with_different_settings(bench, tmp_path):
    _cell(tmp_path, "adversarial", 0, (0.9, 0.9, 0.9), median=2.0)
    _cell(tmp_path, "adversarial", 1, (0.9, 0.9, 0.9), median=2.0, adversarial={**ADV, "steps": 3})
    args = bench.parse_args(["--cache", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="mixes runs with different settings.*own --cache"):
        bench.report(args, tmp_path, verbose=False)


def test_empty_cache_reports_nothing(bench, tmp_path, capsys):
    args = bench.parse_args(["--cache", str(tmp_path), "--out", str(tmp_path / "out")])
    assert bench.report(args, tmp_path) == {}
    assert "no finished run yet" in capsys.readouterr().out


def test_grid_runs_the_long_adversarial_runs_first(bench):
    names = [c["name"] for c in bench.grid_cells(bench.parse_args(["--seeds", "0", "1"]))]
    assert names == ["adversarial-seed0", "adversarial-seed1", "standard-seed0", "standard-seed1"]
    args = bench.parse_args(["--seeds", "2", "--methods", "standard"])
    assert bench.grid_cells(args) == [{"name": "standard-seed2", "method": "standard", "seed": 2}]


def test_command_names_the_options_that_shape_the_runs(bench):
    args = bench.parse_args(["--seeds", "1", "--methods", "adversarial", "--adv-steps", "1", "--threads", "1"])
    cmd = bench._command(args)
    assert cmd.startswith("python benchmarks/adversarial.py --config examples/easy_vqa/imp.yaml --seeds 1 ")
    assert "--methods adversarial" in cmd and "--adv-steps 1" in cmd and "--threads 1" in cmd
    assert "--steps-per-round" not in cmd  # not given: the recipe's


@pytest.mark.skipif(importlib.util.find_spec("easy_vqa") is None, reason="needs the demo extra (easy-vqa)")
def test_build_seeds_each_run_and_sets_the_method(bench):
    # the yaml's seed_everything must not override the run's seed (it did: every seed trained seed 0's model)
    args = bench.parse_args(["--adv-steps", "1", "--epsilon-text", "0.25", "--max-test-questions", "32"])
    m0, dm, cb_args, cli0 = bench.build(args, "standard", 0)
    m1, _, _, cli1 = bench.build(args, "adversarial", 1)
    assert (cli0.config.seed_everything, cli1.config.seed_everything) == (0, 1)
    assert m0.adversarial is None
    assert m1.adversarial.steps == 1 and m1.adversarial.epsilon == {"text": 0.25, "image": 0.5}
    assert m1.adversarial.modalities == ("text", "image") and m1.adversarial.kl_weight == 1.0
    assert dm.max_test_questions == 32 and cb_args["target_sparsity"] == 0.7
    head0, head1 = (dict(m.named_parameters()) for m in (m0, m1))
    name = next(n for n in head0 if n.startswith("head") and n.endswith("weight"))
    assert not torch.equal(head0[name], head1[name])  # different seeds, different new layers
    m0b, *_ = bench.build(args, "standard", 0)
    assert torch.equal(head0[name], dict(m0b.named_parameters())[name])  # the same seed, the same model
