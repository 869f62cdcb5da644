"""CMT for offline meta-RL (seeds/000, Section 4.2, Fig. 2): task prompts from context trajectories.

The data are a task family's multi-task dataset (seqrl.data.meta_recipes); only the training tasks'
episodes are used, for the batches and for every normalisation statistic (held-out tasks are for
evaluation). What changes from single-task CMT (seqrl.algos.cmt):

* Context. The generator's prompt z = A_e(c) encodes a *context trajectory* c of the window's task:
  another fragment of the window's own episode (``context_from="episode"``, default) or a fragment of a
  random episode of the same task (``"task"``). A learned [SEP] token
  separates the prompt from the history: the generator reads [z_1 .. z_P, SEP, s_0, a_0, r_0, ...].
* Two InfoNCE losses (Eq. 3 at two levels). Task level: the prompt of a fragment of another episode of
  the same task and the prompt of a fragment of the window's episode are positives; rows of other tasks are the negatives (rows of the
  same task are not counted as negatives). Trajectory level, as in single-task CMT: two fragments of one
  episode are positives, other episodes the negatives. L = L1 + gamma_task L2_task + gamma L2_traj.
* Improvement stage: as single-task CMT, with the planner and the adaptor reading the same task's
  context prompts.

Two prompts (``task_encoder=True``; Section 4.2 "incorporates a task prompt" next to the policy
prompt, Fig. 2). A second encoder F gives the task prompt t from a fragment of a random episode of the
window's task, and A_e the policy prompt z as in single-task CMT; the generator reads
[z_1 .. z_P, t_1 .. t_P, SEP, history]. The task-level InfoNCE shapes t, the trajectory-level one z, and
the adaptor tunes z only. The policy prompt's fragment comes from the window's own episode
(``policy_from="episode"``) or from an episode of another training task at the same within-task return
rank (``"rank"``): it then says how well to act but not which task, which the generator has to read from
t. Acting uses the stored policy prompt (the mean over each training task's best episodes) through the
adaptor, and the context only for the task prompt, so that a poor context trajectory (the agent's own
first episodes, zero-shot) can still name the task without dragging the behaviour down with it.

Acting takes its context from the evaluation protocol (seqrl.eval.meta): zero-shot, the agent's own
earlier episodes in the task (the first episode reads its own history as it goes); few-shot, a
trajectory of the task from an offline dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqrl.algos.cmt import CMTConfig, CMTImprovement, CMTRepresentation
from seqrl.algos.meta import RankIndex, TaskIndex, best_per_task, meta_spec, with_task_vectors
from seqrl.envs.relabel import RewardRelabeller
from seqrl.errors import ConfigError
from seqrl.models.cmt import info_nce


@dataclass
class MetaCMTConfig(CMTConfig):
    task_contrastive_coef: float = 0.1
    """gamma_task: weight of the task-level InfoNCE loss"""
    prompt_source: str = "history"
    """without a context yet (zero-shot, first episode), the episode's own recent steps"""
    context_from: str = "episode"
    """where a training context comes from: "episode" (another fragment of the window's own episode, so
    that the prompt carries the behaviour as well as the task, as single-task CMT's policy prompt) or
    "task" (a random episode of the same task, the paper's wording); docs/meta.md has the comparison.
    With task_encoder the task prompt always reads a random episode of the same task"""
    task_encoder: bool = False
    """two prompts (Section 4.2, Fig. 2): a policy prompt from A_e and a task prompt from a second
    encoder; the context trajectory then feeds the task prompt only"""
    prompt_to_steps: bool = False
    """a projection of the whole prompt [z, t] added to every step token's embedding, a direct path
    next to the prompt tokens in front (an experiment: docs/meta.md)"""
    context_steps: int = 0
    """with task_encoder: the generator also reads the context fragment's first k steps themselves, one
    token per step, after the task prompt (the paper's "concatenates a context trajectory with the
    input"; as Prompt-DT's trajectory prompt, K* = 5 there)"""
    task_context_top: float = 1.0
    """with task_encoder: the task prompt's training contexts come from each task's best fraction of
    episodes by return (1.0: any episode of the task; Prompt-DT's demonstrations are the best 0.2), so
    that the generator learns from contexts that show the task; the task InfoNCE's positives still come
    from any episode of the task"""
    relabel_contexts: float = 0.0
    """with task_encoder: the share of the task prompt's training contexts drawn from any training
    episode, whatever its task, with the rewards recomputed for the window's task (seqrl.envs.relabel),
    so that the task prompt reads the rewards rather than the behaviour that comes with a task in the
    data; families whose tasks differ in the reward only"""
    policy_from: str = "episode"
    """with task_encoder, where the policy prompt's fragment comes from: "episode" (the window's own, as
    single-task CMT) or "rank" (another training task's episode at the same within-task return rank)"""
    task_oracle: bool = False
    """a diagnostic, as oracle DT: every observation ends with the true task vector, so the generator
    need not read the task from the prompt (an upper bound for what the task prompt could give)"""


CONTEXT_FROM = ("task", "episode")
POLICY_FROM = ("episode", "rank")


class _TaskContext:
    """Context fragments from the same task, and the meta parts of the policy spec."""

    @staticmethod
    def _check_meta_config(cfg: MetaCMTConfig) -> None:
        if cfg.context_from not in CONTEXT_FROM:
            raise ConfigError(f"context_from must be one of {CONTEXT_FROM}, got '{cfg.context_from}'")
        if cfg.policy_from not in POLICY_FROM:
            raise ConfigError(f"policy_from must be one of {POLICY_FROM}, got '{cfg.policy_from}'")
        if cfg.policy_from != "episode" and not cfg.task_encoder:
            raise ConfigError("policy_from=rank needs task_encoder=true (two prompts)")
        if cfg.context_steps < 0 or cfg.context_steps > cfg.fragment_len:
            raise ConfigError(f"context_steps must be between 0 and fragment_len ({cfg.fragment_len}), "
                              f"got {cfg.context_steps}")
        if cfg.context_steps and not cfg.task_encoder:
            raise ConfigError("context_steps needs task_encoder=true (two prompts)")
        if not 0.0 < cfg.task_context_top <= 1.0:
            raise ConfigError(f"task_context_top must be in (0, 1], got {cfg.task_context_top}")
        if cfg.task_context_top < 1.0 and not cfg.task_encoder:
            raise ConfigError("task_context_top needs task_encoder=true (two prompts)")
        if not 0.0 <= cfg.relabel_contexts <= 1.0:
            raise ConfigError(f"relabel_contexts must be in [0, 1], got {cfg.relabel_contexts}")
        if cfg.relabel_contexts > 0 and not cfg.task_encoder:
            raise ConfigError("relabel_contexts needs task_encoder=true (two prompts)")
        if cfg.task_oracle and cfg.relabel_contexts > 0:
            raise ConfigError("task_oracle and relabel_contexts do not go together")

    def _index_tasks(self) -> None:
        self.task_index = TaskIndex(self.dataset.episode_tasks)
        top = self.config.task_context_top
        self.context_index = (TaskIndex(self.dataset.episode_tasks,
                                        allowed=best_per_task(self.dataset, top))
                              if top < 1.0 else self.task_index)
        self.rank_index = (RankIndex(self.dataset.episode_tasks, self.dataset.episode_returns)
                           if self.config.policy_from == "rank" else None)
        self.relabeller = (RewardRelabeller(self.family, self.dataset)
                           if self.config.relabel_contexts > 0 else None)

    def same_task_episodes(self, episodes: np.ndarray) -> np.ndarray:
        """A uniformly drawn episode of the same task for each of ``episodes``."""
        return self.task_index.draw(episodes, self.sampler.rng)

    def task_context_episodes(self, episodes: np.ndarray) -> np.ndarray:
        """Two prompts: the episodes the task prompts of the windows of ``episodes`` read in training
        (of the same task, among its best ``task_context_top`` fraction)."""
        return self.context_index.draw(episodes, self.sampler.rng)

    def task_context(self, episodes: np.ndarray) -> dict:
        """Two prompts: the fragments the task prompts of the windows of ``episodes`` read in training.
        With ``relabel_contexts`` = p, a share p of them comes from a uniformly drawn training episode
        of any task, its rewards recomputed for the window's task."""
        chosen = self.task_context_episodes(episodes)
        if self.relabeller is None:
            return self.fragments(chosen)
        rng, length = self.sampler.rng, self.config.fragment_len
        swap = rng.random(len(episodes)) < self.config.relabel_contexts
        chosen = np.where(swap, rng.integers(0, self.dataset.num_episodes, len(episodes)), chosen)
        batch = self.sampler.fragments(chosen, length)
        if swap.any():
            rows = np.minimum(batch.starts[swap, None] + np.arange(length), len(self.dataset.rewards) - 1)
            tasks = self.dataset.episode_tasks[episodes[swap]][:, None]
            rewards = self.relabeller.rewards(rows, tasks) * self.sampler.reward_scale
            batch.rewards[swap] = np.where(batch.mask[swap], rewards, 0.0)
        return self.to_model_units(batch)

    def policy_episodes(self, episodes: np.ndarray) -> np.ndarray:
        """Two prompts: the episodes the policy prompts of the windows of ``episodes`` read."""
        if self.rank_index is None:
            return episodes
        return self.rank_index.draw(episodes, self.sampler.rng)

    def prompt_fragments(self, episodes: np.ndarray) -> dict:
        if self.config.context_from == "episode":
            return self.fragments(episodes)
        return self.fragments(self.same_task_episodes(episodes))

    def encode_task(self, frag: dict) -> torch.Tensor:
        return self.model.encode_task(frag["observations"], frag["actions"], frag["rewards"], frag["mask"])

    def context_prompt(self, episodes: np.ndarray) -> torch.Tensor:
        """The generator's prompt for windows of ``episodes``: one prompt from a context fragment, or
        with two prompts [z, t] (policy prompt, then the task prompt of another episode of the task)."""
        if not self.config.task_encoder:
            return super().context_prompt(episodes)
        z = self.encode(self.fragments(self.policy_episodes(episodes)))
        t = self.encode_task(self.task_context(episodes))
        return torch.cat([z, t], dim=1)

    @torch.no_grad()
    def prepare_policy(self) -> None:
        """Two prompts: the stored policy prompt summarises (``stored_prompt_rule``: mean or medoid)
        fragments of each training task's best episodes (ranked within the task, as returns differ
        between tasks) and the stored task prompt,
        used before any context, averages fragments of every task. One prompt: as single-task CMT."""
        if not self.config.task_encoder:
            return super().prepare_policy()
        m, ds, cfg = self.model, self.dataset, self.config
        was_training = m.training
        m.eval()
        best = np.flatnonzero(best_per_task(ds, cfg.prompt_top_fraction))
        m.stored_prompt.copy_(self.summarise_prompts(self.encode(self.spread_fragments(best))))
        everyone = np.unique(np.linspace(0, ds.num_episodes - 1, min(ds.num_episodes, 256)).astype(np.int64))
        m.stored_task_prompt.copy_(self.encode_task(self.spread_fragments(everyone)).mean(0))
        m.train(was_training)

    def evaluate_policy(self, policy, run) -> list[dict]:
        """Zero-shot on the held-out tasks, ``run.eval_episodes`` consecutive episodes per task."""
        from seqrl.eval.meta import evaluate_meta

        return [evaluate_meta(policy, self.family, self.family.test_ids, rounds=run.eval_episodes,
                              mode="zero-shot", fragment_len=self.config.fragment_len,
                              seed=run.seed + 1_000_000)]

    def build_model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "sep_token": True, "task_encoder": bool(self.config.task_encoder),
                "prompt_to_steps": bool(self.config.prompt_to_steps),
                "context_steps": int(self.config.context_steps)}

    def policy_spec(self) -> dict:
        spec = super().policy_spec()
        spec["meta"] = meta_spec(self.family, task_oracle=bool(self.config.task_oracle))
        return spec


class MetaCMTRepresentation(_TaskContext, CMTRepresentation):
    metric_names = ("action_loss", "reward_loss", "state_loss", "value_loss", "infonce",
                    "task_infonce")

    def __init__(self, config: MetaCMTConfig, dataset, family, seed: int = 0, device="cpu"):
        self.family = family
        self._check_meta_config(config)
        if config.task_oracle:
            dataset = with_task_vectors(dataset, family)
        super().__init__(config, dataset, seed, device)
        self._index_tasks()

    def loss(self):
        cfg = self.config
        window = self.sampler.sample()
        episodes = window.episode_ids
        w = self.to_model_units(window)
        if cfg.task_encoder:  # two prompts: L1 behind [z, t], z of the policy episode, t of the task
            pair_episodes = self.policy_episodes(episodes)
            z1 = self.encode(self.fragments(pair_episodes))
            z2 = self.encode(self.fragments(pair_episodes))
            task_anchor = self.encode_task(self.task_context(episodes))
            task_positive = self.encode_task(self.fragments(episodes))
            prompt = torch.cat([z1, task_anchor], dim=1)
            # the task InfoNCE shapes t itself, not the raw context steps behind it (context_steps)
            p = self.model.prompt_len
            task_anchor, task_positive = task_anchor[:, :p], task_positive[:, :p]
        else:  # one prompt, from the context fragment; both InfoNCE losses shape it
            pair_episodes = episodes
            prompt = self.encode(self.prompt_fragments(episodes))
            task_anchor = self.encode(self.fragments(self.same_task_episodes(episodes)))
            z1 = self.encode(self.fragments(episodes))
            z2 = self.encode(self.fragments(episodes))
            task_positive = z1
        action_loss, reward_loss, state_loss, value_loss = self.reconstruction_losses(prompt, w)
        tasks = torch.as_tensor(self.dataset.episode_tasks[episodes], device=self.device)
        task_nce = info_nce(task_anchor, task_positive, cfg.temperature, groups=tasks)
        nce = info_nce(z1, z2, cfg.temperature, groups=torch.as_tensor(pair_episodes, device=self.device))
        loss = (action_loss + cfg.reward_coef * reward_loss + cfg.state_coef * state_loss
                + cfg.value_coef * value_loss + cfg.contrastive_coef * nce
                + cfg.task_contrastive_coef * task_nce)
        return loss, {"action_loss": action_loss.detach(), "reward_loss": reward_loss.detach(),
                      "state_loss": state_loss.detach(), "value_loss": value_loss.detach(),
                      "infonce": nce.detach(), "task_infonce": task_nce.detach()}


class MetaCMTImprovement(_TaskContext, CMTImprovement):
    def __init__(self, config: MetaCMTConfig, dataset, family, seed: int = 0, device="cpu",
                 pretrained: dict | None = None):
        self.family = family
        self._check_meta_config(config)
        if config.task_oracle:
            dataset = with_task_vectors(dataset, family)
        super().__init__(config, dataset, seed, device, pretrained=pretrained)
        self._index_tasks()
