"""Meta-RL baselines: Prompt-DT (prompt prefix, cached decoding, same-task demonstrations), multi-task
DT, oracle DT (task vector in the observation), the meta-test CLI and one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqrl.algos.dt_meta import MetaDTConfig, MultiTaskDT, PromptDT, PromptDTConfig
from seqrl.algos.meta import TaskIndex, best_per_task, training_part, with_task_vectors
from seqrl.cli import main
from seqrl.data.recipes import generate
from seqrl.envs.tasks import get_family
from seqrl.eval.meta import _fragment, evaluate_meta
from seqrl.models import DecisionTransformer
from seqrl.policy import Policy

TINY = dict(context_len=5, embed_dim=16, num_layers=1, batch_size=8, warmup_steps=2)


@pytest.fixture
def point_data(point_policies):
    return generate("point-robot", steps=50 * 60, seed=0, progress=False)


def _prompt(b, p, obs_dim=4, act_dim=2, seed=0, masked_tail=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, p, dtype=torch.bool)
    if masked_tail:
        mask[:, p - masked_tail:] = False
    return {"observations": torch.randn(b, p, obs_dim, generator=g) * mask[..., None],
            "actions": torch.rand(b, p, act_dim, generator=g) * mask[..., None],
            "returns_to_go": torch.randn(b, p, generator=g) * mask,
            "timesteps": torch.randint(0, 50, (b, p), generator=g) * mask, "mask": mask}


def test_prompt_dt_reads_its_prompt_and_masked_steps_are_inert():
    torch.manual_seed(0)
    model = DecisionTransformer(4, 2, context_len=4, embed_dim=16, num_layers=2, dropout=0.0,
                                prompt_len=3).eval()
    s, a = torch.randn(2, 4, 4), torch.rand(2, 4, 2)
    r, t = torch.randn(2, 4), torch.arange(4).repeat(2, 1)
    one, other = model(s, a, r, t, prompt=_prompt(2, 3, seed=0)), model(s, a, r, t, prompt=_prompt(2, 3, seed=1))
    assert not torch.allclose(one, other)           # the prompt changes the actions
    # a padded prompt step means "nothing": its raw inputs do not matter
    p = _prompt(2, 3, seed=2, masked_tail=1)
    q = {k: v.clone() for k, v in p.items()}
    q["observations"][:, 2] = 5.0
    q["timesteps"][:, 2] = 7
    torch.testing.assert_close(model(s, a, r, t, prompt=p), model(s, a, r, t, prompt=q))
    with pytest.raises(ValueError):
        model(s, a, r, t)                            # a Prompt-DT model needs its prompt


def test_prompt_dt_cached_actions_equal_the_full_forward_with_the_prompt():
    torch.manual_seed(0)
    k, steps, n, p = 4, 11, 2, 3
    model = DecisionTransformer(4, 2, context_len=k, embed_dim=16, num_layers=2, num_heads=2,
                                prompt_len=p)
    spec = {"obs_mean": [0.0] * 4, "obs_std": [1.0] * 4, "return_scale": 10.0, "target_return": 5.0,
            "eval_keep": 2}
    policy = Policy(model, spec)
    rng = np.random.default_rng(0)
    ctx = [rng.standard_normal((n, p, 4)).astype(np.float32), rng.uniform(-1, 1, (n, p, 2)).astype(np.float32),
           rng.standard_normal((n, p)).astype(np.float32)]
    ctx_rtg = rng.uniform(0, 20, (n, p)).astype(np.float32)
    ctx_t = np.tile(np.arange(10, 10 + p), (n, 1))
    obs = rng.standard_normal((steps, n, 4)).astype(np.float32)
    policy.reset(target_return=5.0, num_envs=n)
    policy.set_context(*ctx, returns_to_go=ctx_rtg, timesteps=ctx_t)
    actions = np.stack([policy.act(obs[i], 0.5 if i else 0.0) for i in range(steps)])
    prompt = {"observations": torch.from_numpy(ctx[0]), "actions": torch.from_numpy(ctx[1]),
              "returns_to_go": torch.from_numpy(ctx_rtg / 10.0), "timesteps": torch.from_numpy(ctx_t),
              "mask": torch.ones(n, p, dtype=torch.bool)}
    rtg = (5.0 - 0.5 * np.arange(steps)) / 10.0
    start = 0
    for i in range(steps):           # the window rule of seqrl.policy with eval_keep = 2
        if i - start == k:
            start = i - 2
        w = slice(start, i + 1)
        with torch.no_grad():
            full = model(torch.from_numpy(obs[w]).transpose(0, 1), torch.from_numpy(actions[w]).transpose(0, 1),
                         torch.tensor(rtg[w], dtype=torch.float32).repeat(n, 1),
                         torch.arange(start, i + 1).repeat(n, 1), prompt=prompt)
        np.testing.assert_allclose(actions[i], full[:, -1].numpy(), atol=1e-5, rtol=1e-5)


def test_prompts_are_demonstrations_of_the_windows_task(point_data):
    part, family = training_part(point_data)
    algo = PromptDT(PromptDTConfig(**TINY, prompt_len=3, prompt_top_fraction=0.34), part, family)
    best = best_per_task(part, 0.34)
    for t in np.unique(part.episode_tasks):       # each task keeps its best third (1 of 3 episodes)
        mine = np.flatnonzero(part.episode_tasks == t)
        assert best[mine].sum() == 1
        assert part.episode_returns[mine[best[mine]]][0] == part.episode_returns[mine].max()
    episodes = np.arange(part.num_episodes).repeat(3)
    drawn = algo.prompt_index.draw(episodes, np.random.default_rng(0))
    np.testing.assert_array_equal(part.episode_tasks[drawn], part.episode_tasks[episodes])
    assert best[drawn].all()
    loss, _ = algo.loss()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        TaskIndex(np.array([0, 1]), allowed=np.array([True, False]))   # task 1 has nothing to draw


def test_oracle_observations_end_with_the_task_vector(point_data):
    part, family = training_part(point_data)
    oracle = with_task_vectors(part, family)
    assert oracle.obs_dim == part.obs_dim + 2
    for e in (0, part.num_episodes - 1):
        rows = slice(part.offsets[e], part.offsets[e + 1])
        goal = np.asarray(family.kwargs(int(part.episode_tasks[e]))["goal"], np.float32)
        np.testing.assert_allclose(oracle.observations[rows, 2:], np.tile(goal, (rows.stop - rows.start, 1)))
        np.testing.assert_allclose(oracle.observations[rows, :2], part.observations[rows])
    algo = MultiTaskDT(MetaDTConfig(**TINY, task_oracle=True), part, family)
    assert algo.model.obs_dim == 4 and algo.policy_spec()["meta"]["task_oracle"] is True
    plain = MultiTaskDT(MetaDTConfig(**TINY), part, family)  # statistics from training tasks only
    np.testing.assert_allclose(plain.sampler.obs_mean, part.observation_stats()[0])


class SpyPolicy:
    spec = {"meta": {"task_oracle": True}}

    def __init__(self):
        self.seen = []

    def reset(self, target_return=None, num_envs=1):
        self.rows = np.arange(num_envs)

    def select(self, keep):
        self.rows = self.rows[np.asarray(keep)]

    def act(self, obs, reward):
        self.seen.append(obs.copy())
        return np.zeros((len(obs), 2), np.float32)


def test_oracle_policy_sees_each_tasks_true_vector():
    family = get_family("point-robot")
    tasks = family.test_ids[:3]
    spy = SpyPolicy()
    evaluate_meta(spy, family, tasks, rounds=1, mode="none", seed=0)
    goals = np.array([family.kwargs(t)["goal"] for t in tasks], np.float32)
    assert all(o.shape == (3, 4) for o in spy.seen)
    for o in spy.seen:
        np.testing.assert_allclose(o[:, 2:], goals)


def test_context_fragments_carry_returns_to_go_and_timesteps():
    rng = np.random.default_rng(0)
    states, actions = np.arange(10.0)[:, None], np.zeros((10, 1))
    rewards = np.arange(10.0)
    s, a, r, mask, rtg, t = _fragment(rng, states, actions, rewards, 4)
    first = int(t[0])
    np.testing.assert_array_equal(t, np.arange(first, first + 4))
    np.testing.assert_allclose(rtg, [rewards[i:].sum() for i in range(first, first + 4)])
    s, a, r, mask, rtg, t = _fragment(rng, states[:3], actions[:3], rewards[:3], 5)   # short episode
    np.testing.assert_array_equal(mask, [True, True, True, False, False])
    np.testing.assert_allclose(rtg, [3, 3, 2, 0, 0])
    np.testing.assert_array_equal(t, [0, 1, 2, 0, 0])


def test_tiny_baseline_runs_and_meta_eval_cli(point_policies, tmp_path, capsys):
    assert main(["data", "make", "point-robot", "--steps", "3000", "--no-progress"]) == 0
    assert main(["data", "make", "point-robot-expert", "--steps", "1000", "--no-progress"]) == 0
    settings = [f"--set={k}={v}" for k, v in TINY.items()]
    family = get_family("point-robot")
    for algo, extra in (("prompt-dt", ["--set", "prompt_len=3"]), ("dt", ["--set", "task_oracle=true"]),
                        ("dt", [])):
        out = tmp_path / f"{algo}{len(extra)}"
        assert main(["train", algo, "--dataset", "point-robot", "--steps", "4", "--eval-episodes", "2",
                     "--out", str(out), "--no-progress", *settings, *extra]) == 0
        ev = json.loads((out / "summary.json").read_text())["eval"]
        assert [t["task"] for t in ev["per_task"]] == family.test_ids and len(ev["curve"]) == 2
        assert ev["mode"] == ("few-shot" if algo == "prompt-dt" else "none")
        # the default target return is the best return of the training tasks' episodes
        part, _ = training_part(generate("point-robot", steps=3000, seed=0, progress=False))
        assert ev["target_return"] == pytest.approx(part.episode_returns.max(), abs=0.01)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "prompt-dt2"), "--episodes", "1", "--context", "point-robot-expert",
                 "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["mode"] == "few-shot" and ev["context"] == "point-robot-expert" and len(ev["per_task"]) == 10
    assert main(["eval", str(tmp_path / "dt2"), "--episodes", "1", "--tasks", "train", "--json"]) == 0
    assert [t["task"] for t in json.loads(capsys.readouterr().out)["per_task"]] == family.train_ids
    # one-line errors
    for argv, message in (
            (["eval", str(tmp_path / "dt0"), "--mode", "zero-shot"], "takes no context"),
            (["eval", str(tmp_path / "dt0"), "--mode", "few-shot"], "needs --context"),
            (["train", "bc", "--dataset", "point-robot", "--steps", "2"], "multi-task (meta-RL) dataset"),
            (["train", "dt", "--dataset", "point-robot", "--steps", "2", "--set", "bogus=1"],
             "unknown setting 'bogus'"),
            (["train", "dt", "--dataset", "point-robot", "--steps", "2", "--eval-workers", "2"],
             "--eval-workers is for single-task datasets"),
            (["eval", str(tmp_path / "dt0"), "--workers", "2"], "--workers is for single-task runs"),
            (["eval", str(tmp_path / "dt0"), "--context", "point-robot-expert"], "--context is for --mode few-shot"),
            (["eval", str(tmp_path / "dt0"), "--mode", "few-shot", "--context", "hopper-medium"],
             "hopper-medium"),                                         # not made on demand: an error
            (["eval", str(tmp_path / "dt0"), "--mode", "few-shot", "--context", "cheetah-vel-expert"],
             "is not a point-robot dataset"),
            (["eval", str(tmp_path / "dt0"), "--policy-prompt", "stored"], "for meta-RL CMT runs"),
            (["eval", str(tmp_path / "dt0"), "--env", "hopper"], "--env is for single-task runs"),
            (["eval", str(tmp_path / "dt0"), "--seed", "-1"], "seed must be an integer in [0, 2^63)")):
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bench_meta_tiny_trains_evaluates_and_reuses(point_policies, tmp_path):
    from seqrl.bench.meta_bench import protocols, run_meta_bench

    for name, steps in (("point-robot", 3000), ("point-robot-medium", 1000), ("point-robot-expert", 1000)):
        assert main(["data", "make", name, "--steps", str(steps), "--no-progress"]) == 0
    tiny = [f"{k}={v}" for k, v in TINY.items()]
    cmt = ["fragment_len=5", "prompt_len=2", "encoder_layers=1", "improve_steps=2", "relabel_states=4",
           "plan_horizon=2", "beam_width=2", "plan_candidates=2"]
    kwargs = dict(seeds=[0], steps=3, rounds=2,
                  overrides={"all": tiny, "cmt": cmt, "cmt-beta0": ["behaviour_coef=0"]},
                  runs=str(tmp_path / "runs"), out_dir=str(tmp_path / "out"), progress=False,
                  cmt_variants=["cmt-beta0"])
    result = run_meta_bench("point-robot", **kwargs)
    rows = [r["protocol"] for r in result["rows"]]
    assert rows == [p[0] for p in protocols("point-robot", ["cmt-beta0"])]
    assert rows[-4:] == ["CMT (cmt-beta0) zero-shot", "CMT (cmt-beta0) few-shot, expert context",
                         "CMT (cmt-beta0) few-shot, medium context", "CMT (cmt-beta0) without context"]
    # the variant changes an improvement-stage setting only: it reuses cmt's representation stage
    variant = json.loads((tmp_path / "runs" / "cmt-beta0-point-robot-s0" / "summary.json").read_text())
    assert Path(variant["representation"]["run_dir"]).parent.name == "cmt-point-robot-s0"
    config = json.loads((tmp_path / "runs" / "cmt-beta0-point-robot-s0" / "config.json").read_text())
    assert config["algo"]["behaviour_coef"] == 0 and config["algo"]["fragment_len"] == 5
    assert all(len(r["curve_mean"]) == 2 and np.isfinite(r["return_mean"]) for r in result["rows"])
    assert (tmp_path / "out" / "meta-point-robot.png").stat().st_size > 0
    # context gain: each CMT's return with a context minus the same runs without one, per seed
    by = {r["protocol"]: r for r in result["rows"]}
    assert set(result["context_gain"]) == {f"{label}_{key}" for label in ("cmt", "cmt-beta0")
                                           for key in ("zero_shot", "medium", "expert")}
    expert, none = (by[f"CMT (cmt-beta0) {p}"]["seeds"][0]["return_mean"]
                    for p in ("few-shot, expert context", "without context"))
    assert result["context_gain"]["cmt-beta0_expert"] == {"mean": expert - none, "per_seed": [expert - none]}
    assert "Context gain" in (tmp_path / "out" / "meta-point-robot.md").read_text()
    oracle = json.loads((tmp_path / "runs" / "oracle-dt-point-robot-s0" / "config.json").read_text())
    assert oracle["algo"]["task_oracle"] is True
    stamp = (tmp_path / "runs" / "dt-point-robot-s0" / "summary.json").stat().st_mtime_ns
    # finished runs are reused, not retrained; evaluated in two spawned processes, the rows are the same
    shared = run_meta_bench("point-robot", **dict(kwargs, eval_workers=2, name="meta-w2"))
    assert (tmp_path / "runs" / "dt-point-robot-s0" / "summary.json").stat().st_mtime_ns == stamp
    assert shared["rows"] == result["rows"] and shared["eval_workers"] == 2
    # --baselines-from: only a new CMT variant trains; the base rows are copied from the earlier result
    from seqrl.errors import ConfigError

    earlier = tmp_path / "out" / "meta-point-robot.json"
    two = dict(kwargs, cmt_variants=["cmt-two"], name="meta-two", baselines_from=str(earlier),
               overrides={**kwargs["overrides"], "cmt-two": ["task_encoder=true", "policy_from=rank"]})
    again = run_meta_bench("point-robot", **two)
    assert (tmp_path / "runs" / "dt-point-robot-s0" / "summary.json").stat().st_mtime_ns == stamp
    copied = {r["protocol"]: r for r in result["rows"] if r["run"] in ("cmt", "prompt-dt", "dt", "oracle-dt")}
    for row in again["rows"][:len(copied)]:
        assert row == json.loads(json.dumps(copied[row["protocol"]]))   # (tuples become lists in JSON)
    assert [r["protocol"] for r in again["rows"]] == [p[0] for p in protocols("point-robot", ["cmt-two"])]
    assert {"cmt-two_cmt_zero_shot_ge_prompt_dt_few_shot", "cmt-two_q4_none_lt_medium_lt_expert"} <= set(
        again["goals"])
    assert again["baselines_from"]["commit"] == result["commit"]
    assert "copied from" in (tmp_path / "out" / "meta-two.md").read_text()
    config = json.loads((tmp_path / "runs" / "cmt-two-point-robot-s0" / "config.json").read_text())
    assert config["algo"]["task_encoder"] is True
    with pytest.raises(ConfigError, match="not comparable"):
        run_meta_bench("point-robot", **dict(two, steps=4))
    # --policy-prompt context: same runs, the variant's policy prompt read from the context
    ctx = run_meta_bench("point-robot", **dict(two, name="meta-two-ctx", policy_prompt="context"))
    assert ctx["policy_prompt"] == "context" and "--policy-prompt context" in (
        tmp_path / "out" / "meta-two-ctx.md").read_text()
    by_row = {r["protocol"]: r["return_mean"] for r in again["rows"]}
    ctx_row = {r["protocol"]: r["return_mean"] for r in ctx["rows"]}
    assert ctx_row["CMT (cmt-two) without context"] == by_row["CMT (cmt-two) without context"]
    assert ctx_row["CMT (cmt-two) few-shot, expert context"] != by_row["CMT (cmt-two) few-shot, expert context"]


class ContextSpy(SpyPolicy):
    """Moves in a fixed direction per episode (so the episodes' returns differ) and records contexts."""
    spec = {"meta": {}}
    directions = [(-0.5, -0.5), (0.5, 0.5), (0.0, 0.0)]

    def __init__(self):
        super().__init__()
        self.round, self.contexts, self.episodes = -1, [], []

    def reset(self, target_return=None, num_envs=1):
        super().reset(target_return, num_envs)
        self.round += 1
        self.episodes.append([])

    def set_context(self, states, actions, rewards, mask, returns_to_go=None, timesteps=None):
        self.contexts.append((self.round, states.copy(), mask.copy()))

    def act(self, obs, reward):
        self.episodes[-1].append(obs.copy())
        return np.tile(np.float32(self.directions[self.round]), (len(obs), 1))


def test_zero_shot_pick_best_takes_the_context_from_the_tasks_best_episode():
    family = get_family("point-robot")
    tasks = family.test_ids          # 10 tasks: a random pick matching the best in all is unlikely
    spy = ContextSpy()
    result = evaluate_meta(spy, family, tasks, rounds=3, mode="zero-shot", fragment_len=5, seed=1, pick="best")
    assert result["pick"] == "best"
    returns = np.array([p["returns"] for p in result["per_task"]])       # (tasks, rounds)
    assert (returns[:, 0] != returns[:, 1]).all()
    round_, states, mask = spy.contexts[-1]                               # the third episode's contexts
    assert round_ == 2
    for pos in range(len(tasks)):
        best = int(np.argmax(returns[pos, :2]))
        episode = np.stack([o[pos] for o in spy.episodes[best]])          # (steps, obs_dim)
        window = states[pos][mask[pos]]
        starts = [i for i in range(len(episode) - len(window) + 1)
                  if np.allclose(episode[i:i + len(window)], window)]
        assert starts, f"task {tasks[pos]}: the context is not a fragment of its best episode"
    with pytest.raises(ValueError, match="pick"):
        evaluate_meta(spy, family, tasks, rounds=1, mode="zero-shot", pick="worst")


def test_bench_meta_data_returns_weigh_every_held_out_task_the_same(monkeypatch):
    """The data row is the mean over held-out tasks of each task's mean episode return: a task with
    many short episodes must not count more than one with a few long ones."""
    import seqrl.data.sources
    from seqrl.bench.meta_bench import _data_returns
    from seqrl.data.trajectories import TrajectoryDataset

    test = get_family("point-robot").test_ids
    # the first held-out task: one 4-step episode of return 4; every other: four 1-step episodes of 0
    lengths = [4] + [1] * 4 * (len(test) - 1)
    tasks = [test[0]] + [t for t in test[1:] for _ in range(4)]
    n = sum(lengths)
    rewards = np.r_[np.ones(4), np.zeros(n - 4)]
    data = TrajectoryDataset(np.zeros((n, 2)), np.zeros((n, 2)), rewards, np.zeros(n, bool),
                             np.zeros(n, bool), offsets=np.r_[0, np.cumsum(lengths)], episode_tasks=tasks,
                             metadata={"seqrl_task_family": "point-robot", "seqrl_test_tasks": test})
    monkeypatch.setattr(seqrl.data.sources, "load_source", lambda name, **kw: data)
    got = _data_returns("point-robot")
    assert set(got) == {"point-robot", "point-robot-medium", "point-robot-expert"}
    assert got["point-robot-expert"] == pytest.approx(4 / len(test))       # not 4 / (number of episodes)
    assert data.episode_returns.mean() == pytest.approx(4 / len(lengths))


def test_bench_meta_checks_every_runs_settings_before_training(tmp_path):
    from seqrl.bench.meta_bench import run_meta_bench
    from seqrl.errors import ConfigError

    kwargs = dict(seeds=[0], steps=2, runs=str(tmp_path / "runs"), out_dir=str(tmp_path / "out"),
                  progress=False)
    # prompt_len is a Prompt-DT setting: the oracle DT (trained last) has none
    with pytest.raises(ConfigError, match="oracle-dt: unknown setting 'prompt_len'"):
        run_meta_bench("point-robot", overrides={"oracle-dt": ["prompt_len=3"]}, **kwargs)
    with pytest.raises(ConfigError, match="cmt: dropout must be in"):
        run_meta_bench("point-robot", overrides={"all": ["dropout=2"]}, **kwargs)
    assert not (tmp_path / "runs").exists()          # nothing trained, no data made
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    with pytest.raises(ConfigError, match="not a result of this benchmark"):
        run_meta_bench("point-robot", cmt_variants=["cmt-x"], baselines_from=str(listing), **kwargs)
