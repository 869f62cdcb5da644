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

Acting takes its context from the evaluation protocol (seqrl.eval.meta): zero-shot, the agent's own
earlier episodes in the task (the first episode reads its own history as it goes); few-shot, a
trajectory of the task from an offline dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from seqrl.algos.cmt import CMTConfig, CMTImprovement, CMTRepresentation
from seqrl.algos.meta import TaskIndex, meta_spec
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
    "task" (a random episode of the same task, the paper's wording); docs/meta.md has the comparison"""


CONTEXT_FROM = ("task", "episode")


class _TaskContext:
    """Context fragments from the same task, and the meta parts of the policy spec."""

    def _index_tasks(self) -> None:
        if self.config.context_from not in CONTEXT_FROM:
            raise ConfigError(f"context_from must be one of {CONTEXT_FROM}, got "
                              f"'{self.config.context_from}'")
        self.task_index = TaskIndex(self.dataset.episode_tasks)

    def same_task_episodes(self, episodes: np.ndarray) -> np.ndarray:
        """A uniformly drawn episode of the same task for each of ``episodes``."""
        return self.task_index.draw(episodes, self.sampler.rng)

    def prompt_fragments(self, episodes: np.ndarray) -> dict:
        if self.config.context_from == "episode":
            return self.fragments(episodes)
        return self.fragments(self.same_task_episodes(episodes))

    def evaluate_policy(self, policy, run) -> list[dict]:
        """Zero-shot on the held-out tasks, ``run.eval_episodes`` consecutive episodes per task."""
        from seqrl.eval.meta import evaluate_meta

        return [evaluate_meta(policy, self.family, self.family.test_ids, rounds=run.eval_episodes,
                              mode="zero-shot", fragment_len=self.config.fragment_len,
                              seed=run.seed + 1_000_000)]

    def build_model_kwargs(self, kwargs: dict) -> dict:
        return {**kwargs, "sep_token": True}

    def policy_spec(self) -> dict:
        spec = super().policy_spec()
        spec["meta"] = meta_spec(self.family)
        return spec


class MetaCMTRepresentation(_TaskContext, CMTRepresentation):
    metric_names = ("action_loss", "reward_loss", "state_loss", "value_loss", "infonce",
                    "task_infonce")

    def __init__(self, config: MetaCMTConfig, dataset, family, seed: int = 0, device="cpu"):
        self.family = family
        super().__init__(config, dataset, seed, device)
        self._index_tasks()

    def loss(self):
        cfg = self.config
        window = self.sampler.sample()
        episodes = window.episode_ids
        w = self.to_model_units(window)
        z_context = self.encode(self.prompt_fragments(episodes))
        z_task = self.encode(self.fragments(self.same_task_episodes(episodes)))
        z1 = self.encode(self.fragments(episodes))
        z2 = self.encode(self.fragments(episodes))
        action_loss, reward_loss, state_loss, value_loss = self.reconstruction_losses(z_context, w)
        tasks = torch.as_tensor(self.dataset.episode_tasks[episodes], device=self.device)
        task_nce = info_nce(z_task, z1, cfg.temperature, groups=tasks)
        nce = info_nce(z1, z2, cfg.temperature, groups=torch.as_tensor(episodes, device=self.device))
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
        super().__init__(config, dataset, seed, device, pretrained=pretrained)
        self._index_tasks()
