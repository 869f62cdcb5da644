"""CMT for offline meta-RL: task splits, [SEP]/context assembly, task-level pairs, meta-test protocol,
and a tiny end-to-end run."""

import json

import numpy as np
import pytest
import torch

from seqrl.algos.cmt_meta import MetaCMTConfig, MetaCMTRepresentation
from seqrl.algos.meta import training_part
from seqrl.cli import main
from seqrl.data.recipes import generate
from seqrl.envs.tasks import get_family
from seqrl.eval.meta import evaluate_meta
from seqrl.models.cmt import CMT

TINY = dict(context_len=5, fragment_len=5, prompt_len=2, embed_dim=16, num_layers=1, encoder_layers=1,
            batch_size=8, warmup_steps=2)


@pytest.fixture
def point_data(point_policies):
    return generate("point-robot", steps=50 * 60, seed=0, progress=False)


def test_training_part_and_statistics_exclude_held_out_tasks(point_data):
    part, family = training_part(point_data)
    assert set(part.episode_tasks) == set(family.train_ids)
    assert not set(part.episode_tasks) & set(family.test_ids)
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY), part, family)
    mean, _ = part.observation_stats()
    np.testing.assert_allclose(algo.sampler.obs_mean, mean)
    assert not np.allclose(algo.sampler.obs_mean, point_data.observation_stats()[0])
    assert algo.model.reward_mean.item() == pytest.approx(float(part.rewards.mean()), rel=1e-5)


def test_context_fragments_come_from_the_same_task(point_data):
    part, family = training_part(point_data)
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY), part, family)
    episodes = np.arange(part.num_episodes).repeat(4)
    drawn = algo.same_task_episodes(episodes)
    np.testing.assert_array_equal(part.episode_tasks[drawn], part.episode_tasks[episodes])
    assert np.mean(drawn != episodes) > 0.5          # mostly other episodes of the task (3 per task)


def test_task_infonce_counts_only_other_tasks_as_negatives(point_data):
    part, family = training_part(point_data)
    one_task = part.filter(part.episode_tasks == family.train_ids[0])
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY), one_task, family)
    _, metrics = algo.loss()
    assert metrics["task_infonce"].item() == 0.0     # every other row shares the task: no negatives
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY), part, family)
    _, metrics = algo.loss()
    assert metrics["task_infonce"].item() > 0.0


def test_sep_token_sits_between_prompt_and_history():
    torch.manual_seed(0)
    model = CMT(obs_dim=3, act_dim=2, context_len=4, fragment_len=4, prompt_len=2, embed_dim=16,
                num_layers=1, encoder_layers=1, dropout=0.0, sep_token=True).eval()
    gen = model.generator
    b, t = 2, 4
    prompt = torch.randn(b, 2, 16)
    states, actions = torch.randn(b, t, 3), torch.randn(b, t, 2).clamp(-1, 1)
    rewards, timesteps = torch.randn(b, t), torch.arange(t).repeat(b, 1)
    prefix = gen.embed_prompt(prompt)
    assert prefix.shape == (b, 3, 16) and gen.prefix_len == 3
    slots = gen.embed_prompt_slot(torch.arange(2))
    torch.testing.assert_close(prefix[:, :2], gen.embed_ln(prompt + slots))
    torch.testing.assert_close(prefix[:, 2], gen.embed_ln(gen.sep).expand(b, -1))
    tokens = torch.cat([prefix, gen.embed_steps(states, actions, rewards, timesteps)], 1)
    h = gen.gpt(tokens)[:, 3:]
    out = gen(prompt, states, actions, rewards, timesteps)
    torch.testing.assert_close(out["action_mean"], gen.read_state(h[:, 0::3])[0])
    # step-by-step decoding with the cache (as acting does) gives the full forward's actions
    cache = gen.new_cache(b)
    first, _ = gen.decode(cache, prompt, states[:, :1], actions[:, :1], rewards[:, :1], timesteps[:, :1])
    torch.testing.assert_close(first, out["action_mean"][:, 0])
    for i in range(1, t):
        mean, _ = gen.decode(cache, prompt, states[:, i - 1:i + 1], actions[:, i - 1:i + 1],
                             rewards[:, i - 1:i + 1], timesteps[:, i - 1:i + 1])
        torch.testing.assert_close(mean, out["action_mean"][:, i], atol=1e-5, rtol=1e-5)


class RecordingPolicy:
    """Acts with a constant action per task position and records the contexts it is given."""

    def __init__(self, n):
        self.actions = np.stack([np.array([np.cos(a), np.sin(a)], np.float32)
                                 for a in np.linspace(0, 3, n)])
        self.contexts = []

    def reset(self, target_return=None, num_envs=1):
        self.rows = np.arange(num_envs)

    def select(self, keep):
        self.rows = self.rows[np.asarray(keep)]

    def act(self, obs, reward):
        return self.actions[self.rows]

    def set_context(self, states, actions, rewards, mask, returns_to_go=None, timesteps=None):
        self.contexts.append((states, actions, rewards, mask))


def test_zero_shot_context_comes_from_the_tasks_own_earlier_episodes():
    family = get_family("point-robot")
    tasks = family.test_ids[:3]
    policy = RecordingPolicy(len(tasks))
    result = evaluate_meta(policy, family, tasks, rounds=3, mode="zero-shot", fragment_len=5, seed=0)
    assert len(policy.contexts) == 2                   # none before the first episode
    states, actions, rewards, mask = policy.contexts[0]
    for pos in range(len(tasks)):
        np.testing.assert_allclose(actions[pos][mask[pos]], policy.actions[pos][None].repeat(5, 0))
        goal = np.asarray(family.kwargs(tasks[pos])["goal"])
        next_pos = states[pos] + 0.1 * actions[pos]   # what the point did after each context step
        np.testing.assert_allclose(rewards[pos], -np.linalg.norm(next_pos - goal, axis=1), atol=1e-5)
    assert [t["task"] for t in result["per_task"]] == tasks
    assert len(result["curve"]) == 3 and result["env_steps"] == 3 * 3 * 20


def test_tiny_meta_run_end_to_end(point_policies, tmp_path, capsys):
    assert main(["data", "make", "point-robot", "--steps", "3000", "--no-progress"]) == 0
    assert main(["data", "make", "point-robot-expert", "--steps", "1000", "--no-progress"]) == 0
    out = tmp_path / "run"
    settings = [f"--set={k}={v}" for k, v in TINY.items()]
    assert main(["train", "cmt", "--dataset", "point-robot", "--steps", "6", "--eval-episodes", "2",
                 "--out", str(out), "--no-progress", "--set", "improve_steps=3",
                 "--set", "relabel_states=8", "--set", "plan_horizon=2", "--set", "beam_width=2",
                 "--set", "plan_candidates=2", *settings]) == 0
    summary = json.loads((out / "summary.json").read_text())
    family = get_family("point-robot")
    for key in ("eval", "eval_without_prompt_tuning"):
        assert [t["task"] for t in summary[key]["per_task"]] == family.test_ids
        assert len(summary[key]["curve"]) == 2
    assert "zero-shot on 10 held-out tasks" in capsys.readouterr().out
    from seqrl.data.sources import load_source
    from seqrl.policy import Policy

    policy = Policy.load(out)
    few = evaluate_meta(policy, family, family.test_ids, rounds=1, mode="few-shot",
                        context_dataset=load_source("point-robot-expert"), fragment_len=5)
    assert len(few["per_task"]) == 10 and np.isfinite(few["return_mean"])
    assert main(["train", "bc", "--dataset", "point-robot", "--steps", "2", "--out",
                 str(tmp_path / "bc")]) != 0        # no meta-RL variant of BC: one-line error
    assert "error: 'point-robot' is a multi-task" in capsys.readouterr().err
