"""The shared trainer end to end: run directory, resume equality, Policy.load, CLI and its errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqrl.cli import main
from seqrl.errors import ConfigError
from seqrl.train import train

TINY = ["embed_dim=16", "num_layers=1", "context_len=5", "warmup_steps=5", "batch_size=8"]


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory):
    """A small Hopper dataset from the shipped medium policy, as a D4RL file (named so the env is known)."""
    from seqrl.data.recipes import make

    path = tmp_path_factory.mktemp("data") / "hopper_small.hdf5"
    make("hopper-medium", steps=1500, seed=0, fmt="d4rl", out=str(path))
    return str(path)


def _rows(run_dir):
    with open(Path(run_dir) / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_train_writes_the_run_directory_and_policy_loads_alone(hopper_file, tmp_path):
    out = tmp_path / "run"
    summary = train("dt", hopper_file, steps=20, eval_every=10, eval_episodes=2, out=out,
                    overrides=TINY, log_every=5, progress=False)
    for name in ("config.json", "metrics.csv", "summary.json", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").iterdir())
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("algo", "dataset", "env", "seed", "steps", "train_updates_per_s"):
        assert key in on_disk
    assert on_disk["env"] == "Hopper-v5" and on_disk["steps"] == 20
    ev = on_disk["eval"]
    for key in ("target_return", "return_mean", "return_std", "normalized_score_mean",
                "normalized_score_std", "episode_lengths", "env_steps", "seconds"):
        assert key in ev
    assert ev["target_return"] == 3600.0 and ev["env_steps"] == sum(ev["episode_lengths"])
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    assert rows[1]["eval_score_mean@3600"] and not rows[0]["eval_score_mean@3600"]
    assert summary["eval"]["return_mean"] == ev["return_mean"]

    # the checkpoint alone (dataset gone) acts and reproduces the final evaluation
    from seqrl.eval import evaluate
    from seqrl.policy import Policy

    moved = Path(hopper_file).rename(hopper_file + ".away")
    try:
        policy = Policy.load(out / "checkpoints" / "last.pt")
    finally:
        moved.rename(hopper_file)
    again = evaluate(policy, "Hopper-v5", 2, 3600.0, seed=1_000_000,
                     reference=tuple(on_disk["config"]["run"]["reference_returns"]))
    assert again["returns"] == pytest.approx(ev["returns"], rel=1e-6)


def test_resume_after_interruption_continues_as_if_uninterrupted(hopper_file, tmp_path, monkeypatch):
    kwargs = dict(steps=40, eval_every=20, eval_episodes=1, overrides=TINY, log_every=10,
                  checkpoint_every=20, progress=False)
    train("dt", hopper_file, out=tmp_path / "straight", **kwargs)

    # interrupt a second run at update 35: rows 10, 20, 30 are written, the checkpoint is at 20
    from seqrl.algos.dt import DecisionTransformerAlgorithm

    real_loss, calls = DecisionTransformerAlgorithm.loss, {"n": 0}

    def dying_loss(self):
        calls["n"] += 1
        if calls["n"] == 35:
            raise KeyboardInterrupt
        return real_loss(self)

    monkeypatch.setattr(DecisionTransformerAlgorithm, "loss", dying_loss)
    with pytest.raises(KeyboardInterrupt):
        train("dt", hopper_file, out=tmp_path / "resumed", **kwargs)
    monkeypatch.setattr(DecisionTransformerAlgorithm, "loss", real_loss)
    assert [r["step"] for r in _rows(tmp_path / "resumed")] == ["10", "20", "30"]
    with pytest.raises(ConfigError, match="--resume"):
        train("dt", hopper_file, out=tmp_path / "resumed", **kwargs)
    train("dt", hopper_file, out=tmp_path / "resumed", resume=True, **kwargs)

    straight, resumed = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in resumed] == ["10", "20", "30", "40"]
    for a, b in zip(straight, resumed):
        for key in ("loss", "grad_norm", "lr", "eval_return_mean@3600"):
            assert a[key] == b[key], (key, a["step"])
    s1 = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)["model"]
    s2 = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)["model"]
    for name in s1:
        assert torch.equal(s1[name], s2[name]), name


def test_resume_refuses_other_settings(hopper_file, tmp_path):
    out = tmp_path / "run"
    train("dt", hopper_file, steps=5, eval_episodes=0, out=out, overrides=TINY, progress=False)
    with pytest.raises(ConfigError, match="embed_dim"):
        train("dt", hopper_file, steps=10, eval_episodes=0, out=out, resume=True, progress=False,
              overrides=TINY[1:] + ["embed_dim=32"])
    # more steps on the same settings is fine
    summary = train("dt", hopper_file, steps=10, eval_episodes=0, out=out, resume=True, progress=False,
                    overrides=TINY)
    assert summary["steps"] == 10 and summary["eval"] is None


def test_resume_of_a_run_that_does_not_exist_says_so_and_starts_it(hopper_file, tmp_path, capsys):
    summary = train("dt", hopper_file, steps=3, eval_episodes=0, out=tmp_path / "typo", resume=True,
                    progress=False, overrides=TINY)
    assert summary["steps"] == 3
    assert "warning: --resume: there is no run directory" in capsys.readouterr().err
    train("dt", hopper_file, steps=5, eval_episodes=0, out=tmp_path / "typo", resume=True, progress=False,
          overrides=TINY)
    assert "warning" not in capsys.readouterr().err       # a real resume: no warning


def test_bc_and_returnless_dt_train_and_evaluate(hopper_file, tmp_path):
    bc = train("bc", hopper_file, steps=10, eval_episodes=2, out=tmp_path / "bc", progress=False,
               overrides=["hidden_dim=32", "top_fraction=0.5"])
    assert bc["eval"]["target_return"] is None and bc["eval"]["normalized_score_mean"] is not None
    pbc = train("dt", hopper_file, steps=10, eval_episodes=2, out=tmp_path / "pbc", progress=False,
                overrides=TINY + ["condition_on_returns=false", "top_fraction=0.3"])
    assert pbc["eval"]["target_return"] is None


def _cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_train_then_eval(hopper_file, tmp_path, capsys):
    out = tmp_path / "cli-run"
    code, stdout, err = _cli(["train", "dt", "--dataset", hopper_file, "--steps", "10", "--out", str(out),
                              "--eval-episodes", "2", "--no-progress", *sum([["--set", s] for s in TINY], [])],
                             capsys)
    assert code == 0, err
    assert "run directory" in stdout and "normalised" in stdout
    code, stdout, err = _cli(["eval", str(out), "--episodes", "2", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert len(result["returns"]) == 2 and result["target_return"] == 3600.0
    code, stdout, _ = _cli(["eval", str(out / "checkpoints" / "last.pt"), "--episodes", "1",
                            "--target-return", "1000", "2000"], capsys)
    assert code == 0 and stdout.count("eval target") == 2
    code, _, err = _cli(["eval", str(out), "--prompt-source", "history"], capsys)
    assert code == 2 and err == "error: --prompt-source is for single-task CMT runs\n"
    code, stdout, err = _cli(["eval", str(out), "--episodes", "3", "--workers", "2", "--json"], capsys)
    assert code == 0, err
    shared = json.loads(stdout)
    assert shared["workers"] == 2 and len(shared["returns"]) == 3


def test_training_evaluates_with_worker_processes(hopper_file, tmp_path):
    summary = train("dt", hopper_file, steps=4, out=tmp_path / "w", eval_every=2, eval_episodes=3,
                    eval_workers=2, overrides=TINY, progress=False)
    assert summary["eval"]["workers"] == 2 and len(summary["eval"]["returns"]) == 3
    assert json.loads((tmp_path / "w" / "config.json").read_text())["run"]["eval_workers"] == 2
    with pytest.raises(ConfigError, match="eval-workers must be positive"):
        train("dt", hopper_file, steps=4, out=tmp_path / "w0", eval_workers=0, overrides=TINY)


@pytest.mark.parametrize("argv, message", [
    (["train", "nope", "--dataset", "X"], "unknown algorithm 'nope'"),
    (["train", "dt", "--dataset", "hopper-bogus"], "unknown dataset"),
    (["train", "dt", "--dataset", "HOPPER", "--steps", "0"], "positive integer"),
    (["train", "dt", "--dataset", "HOPPER", "--env", "walker2d", "--steps", "1"], "obs_dim"),
    (["train", "dt", "--dataset", "HOPPER", "--set", "embed_dim"], "key=value"),
    (["train", "dt", "--dataset", "HOPPER", "--set", "embed_dim=big"], "cannot read 'big'"),
    (["eval", "RUNDIR"], "not a seqrl run directory"),
    (["eval", "GARBAGE"], "not a readable seqrl checkpoint"),
    (["eval", "/no/such/run"], "no such run directory"),
])
def test_cli_errors_are_one_line(argv, message, hopper_file, tmp_path, capsys):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    subs = {"HOPPER": hopper_file, "RUNDIR": str(tmp_path), "GARBAGE": str(tmp_path / "garbage.pt")}
    code, _, err = _cli([subs.get(a, a) for a in argv], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_checkpoint_of_another_shape_is_one_line(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    train("dt", hopper_file, steps=2, eval_episodes=0, out=out, overrides=TINY, progress=False)
    state = torch.load(out / "checkpoints/last.pt", weights_only=True)
    state["policy"]["model_kwargs"]["embed_dim"] = 32
    torch.save(state, tmp_path / "bent.pt")
    code, _, err = _cli(["eval", str(tmp_path / "bent.pt")], capsys)
    assert code == 2 and "do not fit" in err and err.count("\n") == 1


def test_dataset_without_environment_needs_env(tmp_path):
    from seqrl.data.d4rl import save_d4rl
    from tests.conftest import make_dataset

    path = tmp_path / "mystery.hdf5"
    save_d4rl(make_dataset([30, 40], obs_dim=11, act_dim=3), path)
    with pytest.raises(ConfigError, match="--env"):
        train("dt", str(path), steps=2, out=tmp_path / "r", overrides=TINY, progress=False)
    summary = train("dt", str(path), steps=2, eval_episodes=0, out=tmp_path / "r", overrides=TINY,
                    progress=False)
    assert summary["env"] is None and summary["eval"] is None
    summary = train("dt", str(path), env="hopper", steps=2, eval_episodes=1, out=tmp_path / "r2",
                    overrides=TINY, progress=False)
    assert summary["env"] == "Hopper-v5"
    assert np.isfinite(summary["eval"]["return_mean"])


def test_bench_quality_and_eval_small(hopper_file, tmp_path, capsys):
    from seqrl.bench.eval_bench import run_eval_bench
    from seqrl.bench.quality import run_quality

    result = run_quality(["bc"], [hopper_file], [0, 1], steps=5, eval_every=5, eval_episodes=2,
                         overrides={"bc": ["hidden_dim=16"]}, runs=str(tmp_path / "runs"),
                         out_dir=str(tmp_path), name="q", progress=False)
    row = result["rows"][0]
    assert len(row["seeds"]) == 2 and (tmp_path / "q.md").exists()
    scores = [s["score"] for s in row["seeds"]]
    assert row["score_mean"] == pytest.approx(np.mean(scores))
    again = run_quality(["bc"], [hopper_file], [0, 1], steps=5, eval_every=5, eval_episodes=2,
                        overrides={"bc": ["hidden_dim=16"]}, runs=str(tmp_path / "runs"), out_dir=None,
                        progress=False)
    assert [s["score"] for s in again["rows"][0]["seeds"]] == scores   # finished runs are reused

    ev = run_eval_bench(episodes=2, sequential_steps=20, out_dir=str(tmp_path))
    assert ev["runs"]["seqrl"]["env_steps"] == 2000   # HalfCheetah episodes never end early
    assert ev["speedup_vs_sequential"] > 0 and (tmp_path / "eval.json").exists()
    assert ev["raw_env_step_us"] > 0 and ev["raw_env_step_random_actions_us"] > 0
    assert ev["runs"]["seqrl_bf16"]["precision"] == "bf16" and ev["seqrl_bf16_env_step_us"] > 0
    assert ev["workers"] >= 2 and ev["runs"]["seqrl_workers"]["env_steps"] == 2000
    assert ev["raw_env_step_workers_us"] > 0 and ev["seqrl_workers_vs_raw_step"] > 0


class FakeWandb:
    """Stands in for the wandb package: records what the trainer sends it."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, row, step):
        self.logged.append((step, dict(row)))

    def finish(self):
        self.finished += 1


def test_wandb_gets_every_metrics_row_and_a_resume_keeps_its_run(hopper_file, tmp_path, monkeypatch):
    import importlib.util
    import sys

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else real_find_spec(name, *a))
    out = tmp_path / "run"
    kwargs = dict(steps=20, eval_every=10, eval_episodes=1, overrides=TINY, log_every=5, progress=False,
                  wandb_project="seqrl-tests")
    train("dt", hopper_file, out=out, **kwargs)
    rows = _rows(out)
    assert [step for step, _ in fake.logged] == [int(r["step"]) for r in rows] == [5, 10, 15, 20]
    for (_, logged), row in zip(fake.logged, rows):
        assert logged["loss"] == pytest.approx(float(row["loss"]), rel=1e-5)
    assert "eval_score_mean/target_3600" in fake.logged[1][1]
    first = fake.inits[0]
    assert first["project"] == "seqrl-tests" and first["dir"] == str(out) and first["resume"] == "allow"
    assert first["config"]["algo"]["embed_dim"] == 16 and fake.finished == 1
    train("dt", hopper_file, out=out, resume=True, **{**kwargs, "steps": 25})
    assert fake.inits[1]["id"] == first["id"]                       # the same W&B run goes on
    assert fake.logged[-1][0] == 25


def test_wandb_missing_is_one_line(hopper_file, tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a))
    code, _, err = _cli(["train", "dt", "--dataset", hopper_file, "--steps", "2", "--wandb", "p",
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err == "error: --wandb needs the wandb package: pip install wandb\n"
    assert not (tmp_path / "r").exists()


def test_bf16_training_on_a_cpu_without_bf16_instructions_warns(hopper_file, tmp_path, monkeypatch):
    import warnings

    import seqrl.policy

    monkeypatch.setattr(seqrl.policy, "cpu_has_bf16_kernels", lambda: False)
    with pytest.warns(UserWarning, match="without bf16 instructions"):
        train("bc", hopper_file, steps=2, eval_episodes=0, out=tmp_path / "bf16", progress=False,
              overrides=["hidden_dim=8", "bf16=true"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train("bc", hopper_file, steps=2, eval_episodes=0, out=tmp_path / "fp32", progress=False,
              overrides=["hidden_dim=8"])


def test_resume_rewrites_a_damaged_config_and_drops_a_half_written_metrics_row(hopper_file, tmp_path, capsys):
    out = tmp_path / "run"
    kwargs = dict(eval_episodes=0, out=out, overrides=TINY, log_every=5, checkpoint_every=5, progress=False)
    train("dt", hopper_file, steps=10, **kwargs)
    good = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text('{"run": {"seed": 9')              # cut short
    with open(out / "metrics.csv", "a") as f:
        f.write("15,0.1")                                               # a row killed mid-write
    train("dt", hopper_file, steps=15, resume=True, **kwargs)
    assert "config.json' was unreadable; rewritten" in capsys.readouterr().err
    rewritten = json.loads((out / "config.json").read_text())
    assert rewritten["algo"] == good["algo"] and rewritten["run"]["steps"] == 15
    assert [r["step"] for r in _rows(out)] == ["5", "10", "15"]
    assert all(r["loss"] for r in _rows(out))

    (out / "metrics.csv").unlink()
    train("dt", hopper_file, steps=20, resume=True, **kwargs)
    assert "metrics.csv' is missing" in capsys.readouterr().err
    assert [r["step"] for r in _rows(out)] == ["20"]


def test_a_run_on_data_whose_contents_changed_is_neither_resumed_nor_reused(tmp_path):
    """Same dataset name, other contents (remade, or a new version): --resume refuses, and a benchmark
    does not take the finished run as its own."""
    from conftest import make_dataset
    from seqrl.bench.quality import train_or_reuse
    from seqrl.data.d4rl import save_d4rl

    data = tmp_path / "hopper_mine.hdf5"
    save_d4rl(make_dataset([30, 30], obs_dim=11, act_dim=3, seed=0), data)
    kwargs = dict(eval_episodes=0, overrides=TINY, progress=False)
    out = tmp_path / "run"
    train("dt", str(data), steps=4, out=out, **kwargs)
    assert json.loads((out / "config.json").read_text())["run"]["dataset_sha256"]
    assert train_or_reuse(out, "dt", str(data), steps=4, **kwargs)["steps"] == 4     # same data: reused

    save_d4rl(make_dataset([30, 30], obs_dim=11, act_dim=3, seed=1), data, overwrite=True)   # remade: other contents
    with pytest.raises(ConfigError, match="dataset's contents"):
        train("dt", str(data), steps=8, out=out, resume=True, **kwargs)
    with pytest.raises(ConfigError, match="trained on other contents"):
        train_or_reuse(out, "dt", str(data), steps=4, **kwargs)
