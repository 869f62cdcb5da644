"""Multi-task (meta-RL) datasets: every task covered, episodes labelled with the task they ran on,
deterministic, and round-tripped through Minari."""

import json

import minari
import numpy as np
import pytest

from seqrl.cli import main
from seqrl.data.meta_recipes import META_DATASET_NAMES, split_meta_name
from seqrl.data.recipes import generate, make
from seqrl.data.sources import load_source, minari_id_for
from seqrl.envs.tasks import get_family
from seqrl.errors import ConfigError


def test_names():
    assert split_meta_name("cheetah-vel") == ("cheetah-vel", "mixed")
    assert split_meta_name("point-robot-sparse-expert") == ("point-robot-sparse", "expert")
    assert split_meta_name("hopper-medium") is None and split_meta_name("cheetah-vel-replay") is None
    assert minari_id_for("ant-dir-medium") == "seqrl/ant-dir/medium-v0"
    assert minari_id_for("hopper-params") == "seqrl/hopper-params/mixed-v1"   # per-task experts since v1
    assert all(split_meta_name(n) for n in META_DATASET_NAMES)


def test_every_task_covered_and_episodes_labelled_by_their_task(point_policies):
    family = get_family("point-robot")
    data = generate("point-robot", steps=50 * 60, seed=3, progress=False)  # 3 episodes per task
    assert data.obs_dim == 2                                    # the task stays hidden
    assert set(data.episode_tasks) == set(range(50))            # training and held-out tasks
    assert np.all(data.episode_lengths == 20)
    for e in range(0, data.num_episodes, 7):                    # each reward fits its labelled goal
        ep, goal = data.episode(e), np.asarray(family.kwargs(int(data.episode_tasks[e]))["goal"])
        expected = -np.linalg.norm(ep["next_observations"] - goal, axis=1)
        np.testing.assert_allclose(ep["rewards"], expected, atol=1e-5)
    meta = data.metadata
    assert meta["seqrl_train_tasks"] == family.train_ids and meta["seqrl_test_tasks"] == family.test_ids
    again = generate("point-robot", steps=50 * 60, seed=3, progress=False)
    assert again.metadata["seqrl_content_sha256"] == meta["seqrl_content_sha256"]
    other = generate("point-robot", steps=50 * 60, seed=4, progress=False)
    assert other.metadata["seqrl_content_sha256"] != meta["seqrl_content_sha256"]


def test_sparse_family_uses_the_dense_familys_policies(point_policies):
    data = generate("point-robot-sparse-expert", steps=50 * 20, progress=False)
    assert data.num_steps == 1000 and np.all(data.rewards >= 0)


def test_make_writes_minari_with_tasks(point_policies, capsys):
    assert main(["data", "make", "point-robot-medium", "--steps", "2000", "--no-progress"]) == 0
    loaded = load_source("point-robot-medium")
    assert len(loaded.episode_tasks) == loaded.num_episodes == 100
    assert loaded.metadata["seqrl_task_family"] == "point-robot"
    assert "seqrl_episode_tasks" not in loaded.metadata
    ds = minari.load_dataset("seqrl/point-robot/medium-v0")
    assert ds.total_steps == 2000
    # per-task summary: every task weighs the same, and the test tasks' mean uses only those
    capsys.readouterr()
    assert main(["data", "info", "point-robot-medium", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    returns, tasks = loaded.episode_returns, loaded.episode_tasks
    per_task = {t: returns[tasks == t].mean() for t in np.unique(tasks)}
    assert info["tasks"] == 50 and info["mean_episode_length"] == 20.0
    assert info["task_mean_return"] == pytest.approx(np.mean(list(per_task.values())))
    test_ids = get_family("point-robot").test_ids
    assert info["test_task_mean_return"] == pytest.approx(np.mean([per_task[t] for t in test_ids]))
    assert main(["data", "info", "point-robot-medium"]) == 0
    assert "per-task mean return" in capsys.readouterr().out
    with pytest.raises(ConfigError):
        make("point-robot", steps=100, fmt="d4rl")
    assert main(["data", "make", "cheetah-vel", "--steps", "10"]) != 0
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("family_name", ["point-robot", "cheetah-vel", "cheetah-dir", "hopper-params",
                                         "walker-params", "ant-dir", "ant-fwd-back"])
def test_shipped_family_actors_take_observation_and_task_vector(family_name):
    """Every actor a shipped family manifest names loads and acts on observation + task vector."""
    from seqrl.data.meta_recipes import behaviour_actor
    from seqrl.data.recipes import load_manifest

    family = get_family(family_name)
    manifest = load_manifest(family.behaviour_family)
    assert manifest["env_id"] == family.gym_id
    env = family.make(family.test_ids[0])
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    task_dim = len(family.task_vector(family.test_ids[0]))
    names = {manifest["random"], manifest["medium"], manifest["expert"], *manifest["replay"]}
    for name in sorted(names):
        action = behaviour_actor(manifest, name).act(np.zeros((2, obs_dim + task_dim), np.float32),
                                                     np.random.default_rng(0))
        assert action.shape == (2, act_dim)
        assert np.all(np.abs(action) <= env.action_space.high)
    # per-task experts (where they ship): one set for every task, acting on the plain observation
    per_task = manifest.get("per_task")
    if per_task is not None:
        assert sorted(map(int, per_task)) == list(range(len(family.tasks)))
        for entry in per_task.values():
            for name in sorted({entry["random"], entry["medium"], entry["expert"], *entry["replay"]}):
                action = behaviour_actor(manifest, name).act(np.zeros((2, obs_dim), np.float32),
                                                             np.random.default_rng(0))
                assert action.shape == (2, act_dim)


def test_task_sensitivity_benchmark_finds_that_the_point_robot_expert_reads_its_goal():
    """benchmarks/meta_task_sensitivity.py: told another task's goal, point-robot's expert loses most of
    its gain over random behaviour; told its own, it beats both the nominal and the other goal."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "meta_task_sensitivity.py"
    spec = importlib.util.spec_from_file_location("meta_task_sensitivity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.measure("point-robot", episodes=2, seed=0)
    means = result["mean"]
    assert len(result["per_task"]) == len(get_family("point-robot").test_ids)
    assert means["true"] > max(means["nominal"], means["other"], means["random"])
    assert result["gain_lost_by_other"] > 0.5


def steering_actor(goal, gain=5.0, log_std=-20.0):
    """A hand-made point-robot actor (plain 2-D observation): action = tanh(gain * (goal - position)),
    sampled with that log-std (gain 0, log-std 0: a random actor)."""
    from seqrl.policies.actor import Actor

    split = np.vstack([np.eye(2), -np.eye(2)]).astype(np.float32)      # hidden = [relu(x), relu(-x)]
    return Actor(hidden=[(split, np.zeros(4, np.float32))],
                 mu=(gain * np.hstack([-np.eye(2), np.eye(2)]).astype(np.float32),
                     (gain * np.asarray(goal)).astype(np.float32)),
                 log_std=(np.zeros((2, 4), np.float32), np.full(2, log_std, np.float32)),
                 action_low=np.full(2, -1, np.float32), action_high=np.full(2, 1, np.float32))


def random_point_actor():
    return steering_actor((0.0, 0.0), gain=0.0, log_std=0.0)


def test_per_task_expert_cross_evaluation_finds_experts_that_only_fit_their_own_task():
    """benchmarks/meta_per_task_experts.py on hand-made point-robot experts (each steers to its own
    goal): every task's own expert is the best one there, and another task's loses most of the gain."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "meta_per_task_experts.py"
    spec = importlib.util.spec_from_file_location("meta_per_task_experts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    family = get_family("point-robot")
    tasks = family.test_ids[:3]
    experts = {t: steering_actor(family.task_vector(t)) for t in tasks}
    randoms = {t: random_point_actor() for t in tasks}
    result = module.cross_evaluate(family, experts, randoms, episodes=2)
    assert result["own_is_best"] == 3
    assert result["mean"]["own"] > result["mean"]["other"] > result["mean"]["random"]
    assert result["gain_lost_by_other"] > 0.3
    # and an expert that ignores its task (every task gets the same one) is caught: nothing lost
    same = steering_actor(family.task_vector(tasks[0]))
    flat = module.cross_evaluate(family, {t: same for t in tasks}, randoms, episodes=2)
    assert flat["gain_lost_by_other"] == pytest.approx(0.0, abs=1e-9)


def test_per_task_behaviour_manifest_makes_each_task_from_its_own_actors(tmp_path):
    """A manifest with ``per_task`` (per-task experts on plain observations): every task's episodes
    come from that task's actors; a task without actors is a one-line error."""
    from seqrl.data.meta_recipes import generate_meta
    from seqrl.errors import DatasetError
    from seqrl.policies.actor import save_actor

    family = get_family("point-robot")
    root = tmp_path / "policies"
    (root / "point-robot").mkdir(parents=True)
    save_actor(random_point_actor(), root / "point-robot" / "random.safetensors")
    per_task = {}
    for t in range(len(family.tasks)):
        # the "expert" of task t steers to its goal; the "medium" one to the goal of the next task
        save_actor(steering_actor(family.task_vector(t)), root / "point-robot" / f"expert_{t}.safetensors")
        save_actor(steering_actor(family.task_vector((t + 1) % len(family.tasks))),
                   root / "point-robot" / f"medium_{t}.safetensors")
        per_task[str(t)] = {"random": "random.safetensors", "medium": f"medium_{t}.safetensors",
                            "expert": f"expert_{t}.safetensors",
                            "replay": ["random.safetensors", f"medium_{t}.safetensors"]}
    manifest = {"env_id": "seqrl/PointRobot-v0", "per_task": per_task}
    (root / "point-robot" / "manifest.json").write_text(json.dumps(manifest))

    expert = generate_meta("point-robot-expert", steps=2 * 20 * len(family.tasks), seed=0,
                           policy_root=root, progress=False)
    assert expert.num_episodes == 2 * len(family.tasks)
    for e in range(expert.num_episodes):
        task = int(expert.episode_tasks[e])
        final = expert.episode(e)["observations"][-1]
        goals = np.stack([family.task_vector(t) for t in range(len(family.tasks))])
        assert int(np.argmin(np.linalg.norm(goals - final, axis=1))) == task   # ends at its own goal
    mixed = generate_meta("point-robot", steps=3 * 20 * len(family.tasks), seed=0, policy_root=root,
                          progress=False)
    used = mixed.metadata["seqrl_policies"]
    assert {u["file"] for u in used if u["task"] == 7} == {"random.safetensors", "medium_7.safetensors",
                                                           "expert_7.safetensors"}

    del per_task["7"]
    (root / "point-robot" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"lacks tasks \[7\]"):
        generate_meta("point-robot-expert", steps=2 * 20 * len(family.tasks), policy_root=root, progress=False)
