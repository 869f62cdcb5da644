import json

import numpy as np

from seqrl.cli import main
from seqrl.data.collect import collect, random_policy


def test_collect_is_exact_deterministic_and_consistent():
    a = collect("hopper", random_policy("hopper", 1), 700, num_envs=4, seed=1)
    b = collect("hopper", random_policy("hopper", 1), 700, num_envs=4, seed=1)
    assert a.num_steps == 700
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    # every episode ends in exactly one flag; random Hopper falls, so terminations occur
    ends = a.offsets[1:] - 1
    assert np.all(a.terminations[ends] | a.truncations[ends])
    assert a.terminations.sum() > 0
    assert a.inconsistent_next_observations() == 0
    c = collect("hopper", random_policy("hopper", 2), 700, num_envs=4, seed=2)
    assert not np.array_equal(a.observations, c.observations)


def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--workdir", str(tmp_path), "--steps", "400", "--train-steps", "20"]) == 0
    out = capsys.readouterr().out
    assert "identical arrays" in out and "same episode per row: True" in out
    assert (tmp_path / "hopper-random-demo.hdf5").exists()
    assert "dt: 20 updates" in out and "bc: 20 updates" in out and "reset/act" in out
    assert (tmp_path / "dt-hopper-medium-small" / "checkpoints" / "last.pt").exists()


def test_bench_data_small(tmp_path, capsys):
    assert main(["bench", "data", "--steps", "20000", "--seconds", "0.1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "data.json").read_text())
    for key in ("command", "machine", "commit", "seed", "budget", "load_seconds_median", "memory_ratio",
                "segments_per_second_b64", "speedup_vs_reference_style"):
        assert key in result
    assert result["memory_ratio"] <= 1.5
    assert (tmp_path / "data.md").read_text().startswith("# Data-layer benchmark")


def test_data_list_and_version(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "hopper-medium-replay" in out and "seqrl/ant/expert-v0" in out
