"""CMT for offline meta-RL: task splits, [SEP]/context assembly, task-level pairs, meta-test protocol,
and a tiny end-to-end run."""

import json

import numpy as np
import pytest
import torch

from seqrl.algos.cmt_meta import MetaCMTConfig, MetaCMTRepresentation
from seqrl.algos.meta import best_per_task, training_part
from seqrl.cli import main
from seqrl.data.recipes import generate
from seqrl.envs.tasks import get_family
from seqrl.eval.meta import evaluate_meta
from seqrl.models.cmt import CMT

TINY = dict(context_len=5, fragment_len=5, prompt_len=2, embed_dim=16, num_layers=1, encoder_layers=1,
            batch_size=8, warmup_steps=2)


# a tiny improvement stage: few relabelled states, a shallow narrow beam search
TINY_IMPROVE = dict(improve_steps=3, relabel_states=8, plan_horizon=2, beam_width=2, plan_candidates=2)


def train_tiny_cmt(out, steps: int, *extra: str) -> int:
    """`seqrl train cmt` on point-robot at the TINY sizes, 2 evaluation episodes; ``extra``: key=value."""
    settings = [f"--set={k}={v}" for k, v in {**TINY, **TINY_IMPROVE}.items()]
    settings += [f"--set={item}" for item in extra]
    return main(["train", "cmt", "--dataset", "point-robot", "--steps", str(steps), "--eval-episodes",
                 "2", "--out", str(out), "--no-progress", *settings])


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
    assert train_tiny_cmt(out, 6) == 0
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
    assert main(["eval", str(out), "--policy-prompt", "context"]) != 0   # one prompt: nothing to read it into
    err = capsys.readouterr().err
    assert err.startswith("error: policy_prompt=context is for two-prompt") and err.count("\n") == 1


# ---------------------------------------------------------------------------- two prompts (task_encoder)
def test_rank_index_draws_another_task_at_the_same_within_task_rank():
    from seqrl.algos.meta import RankIndex

    # task 0: returns 0..4 (5 episodes), task 1: returns 100..102 (3), task 2: one episode
    tasks = np.array([0, 1, 0, 2, 1, 0, 0, 1, 0])
    returns = np.array([3.0, 101, 0, 50, 100, 4, 1, 102, 2])
    index = RankIndex(tasks, returns)
    np.testing.assert_allclose(index.rank, [0.75, 0.5, 0.0, 0.5, 0.0, 1.0, 0.25, 1.0, 0.5])
    rng = np.random.default_rng(0)
    episodes = np.repeat(np.arange(len(tasks)), 50)
    drawn = index.draw(episodes, rng)
    assert np.all(tasks[drawn] != tasks[episodes])              # always another task
    assert set(tasks[drawn[episodes == 2]]) == {1, 2}          # both other tasks get drawn
    # the worst of task 0 maps to the worst of task 1, the best of task 1 to the best of task 0
    assert set(drawn[(episodes == 2) & (tasks[drawn] == 1)]) == {4}
    assert set(drawn[(episodes == 7) & (tasks[drawn] == 0)]) == {5}
    assert set(drawn[(episodes == 1) & (tasks[drawn] == 0)]) == {8}   # rank 0.5 -> the median
    with pytest.raises(ValueError):
        RankIndex(np.zeros(3, int), np.arange(3.0))


def test_two_prompt_model_tunes_the_policy_prompt_only():
    torch.manual_seed(0)
    model = CMT(obs_dim=3, act_dim=2, context_len=4, fragment_len=4, prompt_len=2, embed_dim=16,
                num_layers=1, encoder_layers=1, dropout=0.0, sep_token=True, task_encoder=True).eval()
    gen = model.generator
    assert model.has_task_prompt and gen.prefix_len == 2 * 2 + 1
    states, actions = torch.randn(3, 4, 3), torch.randn(3, 4, 2).clamp(-1, 1)
    rewards, mask = torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool)
    z, t = model.encode(states, actions, rewards, mask), model.encode_task(states, actions, rewards, mask)
    assert z.shape == t.shape == (3, 2, 16) and not torch.allclose(z, t)   # two encoders
    prompt = torch.cat([z, t], 1)
    torch.testing.assert_close(model.tuned(prompt), prompt)                 # identity before tuning
    torch.nn.init.normal_(model.adaptor.mlp[2].weight)
    tuned = model.tuned(prompt)
    torch.testing.assert_close(tuned[:, 2:], t)                             # the task prompt untouched
    torch.testing.assert_close(tuned[:, :2], model.adaptor(z))
    out = gen(tuned, states, actions, rewards, torch.arange(4).repeat(3, 1))
    assert out["action_mean"].shape == (3, 4, 2)
    one = CMT(obs_dim=3, act_dim=2, context_len=4, fragment_len=4, prompt_len=2, embed_dim=16,
              num_layers=1, encoder_layers=1, sep_token=True)
    with pytest.raises(ValueError):
        one.encode_task(states, actions, rewards, mask)


def test_context_steps_follow_the_task_prompt_untuned_and_zero_past_the_fragment():
    torch.manual_seed(0)
    model = CMT(obs_dim=3, act_dim=2, context_len=4, fragment_len=4, prompt_len=2, embed_dim=16,
                num_layers=1, encoder_layers=1, dropout=0.0, sep_token=True, task_encoder=True,
                context_steps=3).eval()
    assert model.generator.prefix_len == 2 * 2 + 3 + 1
    assert model.stored_task_prompt.shape == (2 + 3, 16)
    states, actions = torch.randn(2, 4, 3), torch.randn(2, 4, 2).clamp(-1, 1)
    rewards = torch.randn(2, 4)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    task = model.encode_task(states, actions, rewards, mask)
    assert task.shape == (2, 2 + 3, 16)
    step = model.embed_context(torch.cat([states, actions, rewards[..., None]], -1))
    torch.testing.assert_close(task[0, 2:], step[0, :3])        # the context's first steps, in order
    torch.testing.assert_close(task[1, 2:4], step[1, :2])
    assert torch.all(task[1, 4] == 0)                             # padding is a zero token
    short = model.encode_task(states[:, :1], actions[:, :1], rewards[:, :1], mask[:, :1])
    assert short.shape == (2, 5, 16) and torch.all(short[:, 3:] == 0)   # fewer steps than k: zeros
    torch.nn.init.normal_(model.adaptor.mlp[2].weight)
    z = model.encode(states, actions, rewards, mask)
    tuned = model.tuned(torch.cat([z, task], 1))
    torch.testing.assert_close(tuned[:, 2:], task)                # t and the steps are not tuned
    out = model.generator(tuned, states, actions, rewards, torch.arange(4).repeat(2, 1))
    assert out["action_mean"].shape == (2, 4, 2)
    with pytest.raises(ValueError, match="task_encoder"):
        CMT(obs_dim=3, act_dim=2, sep_token=True, context_steps=3)


def test_two_prompt_losses_and_policy_prompts_from_other_tasks(point_data):
    from seqrl.errors import ConfigError

    part, family = training_part(point_data)
    cfg = MetaCMTConfig(**TINY, task_encoder=True, policy_from="rank")
    algo = MetaCMTRepresentation(cfg, part, family)
    episodes = np.arange(part.num_episodes).repeat(4)
    drawn = algo.policy_episodes(episodes)
    assert np.all(part.episode_tasks[drawn] != part.episode_tasks[episodes])
    loss, metrics = algo.loss()
    loss.backward()
    assert torch.isfinite(loss) and metrics["task_infonce"].item() > 0
    # the task InfoNCE and the reconstruction reach the task encoder, the trajectory InfoNCE A_e
    assert algo.model.task_encoder.queries.grad.abs().sum() > 0
    assert algo.model.encoder.queries.grad.abs().sum() > 0
    assert algo.context_prompt(episodes[:5]).shape == (5, 2 * TINY["prompt_len"], TINY["embed_dim"])
    from seqrl.algos.cmt_meta import MetaCMTImprovement

    improve = MetaCMTImprovement(cfg, part, family, pretrained=algo.model.state_dict())
    trainable = {n.split(".")[0] for n, p in improve.model.named_parameters() if p.requires_grad}
    assert trainable == {"adaptor"}                                # the task encoder is frozen too
    with pytest.raises(ConfigError, match="task_encoder"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, policy_from="rank"), part, family)
    with pytest.raises(ConfigError, match="policy_from"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, policy_from="best"), part, family)
    with pytest.raises(ConfigError, match="task_encoder"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, context_steps=2), part, family)
    with pytest.raises(ConfigError, match="context_steps"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, context_steps=99), part, family)
    with pytest.raises(ConfigError, match="task_context_top"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, task_context_top=0.0), part, family)
    with pytest.raises(ConfigError, match="task_encoder"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_context_top=0.5), part, family)
    best = MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, task_context_top=0.2), part,
                                 family)
    contexts = best.task_context_episodes(episodes)
    assert np.all(part.episode_tasks[contexts] == part.episode_tasks[episodes])
    assert np.all(best_per_task(part, 0.2)[contexts])            # only each task's best fifth
    assert not np.all(best_per_task(part, 0.2)[algo.task_context_episodes(episodes)])  # default: any
    with_steps = MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, context_steps=2), part,
                                       family)
    loss, metrics = with_steps.loss()
    loss.backward()
    assert torch.isfinite(loss) and with_steps.model.embed_context.weight.grad.abs().sum() > 0
    assert with_steps.context_prompt(episodes[:5]).shape == (5, 2 * TINY["prompt_len"] + 2,
                                                              TINY["embed_dim"])


@pytest.mark.parametrize("context_steps", [0, 3])
def test_tiny_two_prompt_run_acts_from_the_stored_policy_prompt(point_policies, tmp_path, context_steps):
    from seqrl.data.sources import load_source
    from seqrl.policy import Policy

    assert main(["data", "make", "point-robot", "--steps", "3000", "--no-progress"]) == 0
    out = tmp_path / "run"
    assert train_tiny_cmt(out, 4, "task_encoder=true", "policy_from=rank",
                          f"context_steps={context_steps}") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["eval"]["curve"]) == 2
    policy = Policy.load(out)
    m, p = policy.model, TINY["prompt_len"]
    assert m.has_task_prompt and m.stored_task_prompt.abs().sum() > 0
    assert m.context_steps == context_steps and m.stored_task_prompt.shape[0] == p + context_steps
    data = load_source("point-robot")
    eps = [data.episode(int(e)) for e in np.flatnonzero(data.episode_tasks == 0)[:3]]
    policy.reset(num_envs=3)
    policy.set_context(np.stack([e["observations"][:5] for e in eps]),
                       np.stack([e["actions"][:5] for e in eps]),
                       np.stack([e["rewards"][:5] for e in eps]))
    prompt = policy._cmt_prompt(0)
    expected_z = m.tuned(torch.cat([m.stored_prompt, m.stored_task_prompt])[None])[0, :p]
    for row in range(3):   # the policy part is the stored one whatever the context; the task part differs
        torch.testing.assert_close(prompt[row, :p], expected_z)
    assert not torch.allclose(prompt[0, p:], prompt[1, p:])
    assert policy.act(np.zeros((3, m.obs_dim), np.float32)).shape == (3, m.act_dim)
    # policy_prompt "context": the context gives the policy prompt too (before any context: the stored one)
    own = Policy.load(out, policy_prompt="context")
    own.reset(num_envs=3)
    torch.testing.assert_close(own._cmt_prompt(0)[:, :p], expected_z.expand(3, -1, -1))
    ctx = [torch.as_tensor(np.stack([e[k][:5] for e in eps])) for k in ("observations", "actions", "rewards")]
    own.set_context(*ctx)
    states = (ctx[0] - own.obs_mean) / own.obs_std
    mask = torch.ones(3, 5, dtype=torch.bool)
    rewards = m.normalize_reward(ctx[2].float())
    read = torch.cat([m.encode(states, ctx[1].float(), rewards, mask),
                      m.encode_task(states, ctx[1].float(), rewards, mask)], dim=1)
    torch.testing.assert_close(own._cmt_prompt(0), m.tuned(read))
    assert not torch.allclose(own._cmt_prompt(0)[0, :p], expected_z)


def test_relabelled_task_contexts_carry_the_windows_task_rewards(point_data):
    from seqrl.envs.relabel import RewardRelabeller
    from seqrl.errors import ConfigError

    part, family = training_part(point_data)
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, relabel_contexts=1.0), part,
                                 family)
    episodes = np.arange(part.num_episodes).repeat(3)
    frag = algo.task_context(episodes)
    drawn = frag["episode_ids"].numpy()
    assert np.mean(part.episode_tasks[drawn] != part.episode_tasks[episodes]) > 0.5   # mostly other tasks
    rows = frag["starts"].numpy()[:, None] + np.arange(TINY["fragment_len"])
    expected = RewardRelabeller(family, part).rewards(rows, part.episode_tasks[episodes][:, None])
    expected = algo.model.normalize_reward(torch.as_tensor(expected * algo.sampler.reward_scale))
    mask = frag["mask"]
    torch.testing.assert_close(frag["rewards"][mask], expected[mask].float())
    loss, _ = algo.loss()
    assert torch.isfinite(loss)
    plain = MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True), part, family)
    same = plain.task_context(episodes)["episode_ids"].numpy()
    np.testing.assert_array_equal(part.episode_tasks[same], part.episode_tasks[episodes])
    with pytest.raises(ConfigError, match="task_encoder"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, relabel_contexts=0.5), part, family)
    with pytest.raises(ConfigError, match="relabel_contexts"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, relabel_contexts=1.5), part, family)


class ContextSpy:
    """A policy that records the contexts and observations it is given (oracle spec)."""
    spec = {"meta": {"task_oracle": True}}

    def __init__(self):
        self.contexts, self.seen = [], []

    def reset(self, target_return=None, num_envs=1):
        pass

    def select(self, keep):
        pass

    def set_context(self, states, actions, rewards, mask, **_):
        self.contexts.append(states.copy())

    def act(self, obs, reward):
        self.seen.append(obs.copy())
        return np.zeros((len(obs), 2), np.float32)


def test_task_oracle_cmt_sees_the_task_vector_in_observations_and_contexts(point_data):
    from seqrl.errors import ConfigError

    part, family = training_part(point_data)
    algo = MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, task_oracle=True), part, family)
    assert algo.model.obs_dim == part.obs_dim + 2
    assert algo.policy_spec()["meta"]["task_oracle"] is True
    assert torch.isfinite(algo.loss()[0])
    with pytest.raises(ConfigError, match="task_oracle"):
        MetaCMTRepresentation(MetaCMTConfig(**TINY, task_encoder=True, task_oracle=True,
                                            relabel_contexts=0.5), part, family)
    tasks = family.test_ids[:3]
    goals = np.array([family.kwargs(t)["goal"] for t in tasks], np.float32)
    spy = ContextSpy()
    evaluate_meta(spy, family, tasks, rounds=2, mode="zero-shot", fragment_len=5, seed=0)
    assert len(spy.contexts) == 1 and spy.contexts[0].shape == (3, 5, 4)   # round 2 reads round 1
    for row, goal in enumerate(goals):
        np.testing.assert_allclose(spy.contexts[0][row, :, 2:], np.tile(goal, (5, 1)))
        np.testing.assert_allclose(spy.seen[0][row, 2:], goal)
