"""Decision-Transformer baselines for offline meta-RL, on the same data and backbone as meta CMT.

All three train on the training tasks' episodes of a multi-task dataset (seqrl.algos.meta) and are
evaluated on the held-out tasks (seqrl.eval.meta):

* Multi-task DT (``seqrl train dt`` on a multi-task dataset): one DT over all training tasks, no
  context; at meta-test it sees only its own history (mode "none"). It can only act well where its
  history reveals the task.
* Oracle DT (``--set task_oracle=true``): the observation ends with the true task vector
  (``TaskFamily.task_vector``) in training and at test: an upper bound for what a context can tell.
* Prompt-DT (Xu et al. 2022, arXiv:2206.13499; ``seqrl train prompt-dt``): a DT whose window is preceded
  by a short trajectory prompt of the same task, K* = ``prompt_len`` steps of (R*, s*, a*) with their own
  embeddings (seqrl.models.decision_transformer). Prompt-DT samples its prompts from per-task expert
  demonstrations; our datasets mix qualities, so the prompts are fragments of each task's best
  ``prompt_top_fraction`` of episodes by return (in training, and by default at evaluation from the held-out
  tasks' episodes of the same dataset: the few-shot protocol). K* = 5 (one segment of 5 steps), as in
  Prompt-DT's MuJoCo experiments.

Returns-to-go are divided by the family's ``return_scale`` (about the size of an episode return; point
robot returns are tens, not thousands); the default target return is the best episode return of the
training tasks' data (``seqrl.train.api``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrl.algos.dt import DecisionTransformerAlgorithm, DTConfig
from seqrl.algos.meta import TaskIndex, best_per_task, meta_spec, with_task_vectors
from seqrl.errors import ConfigError


@dataclass
class MetaDTConfig(DTConfig):
    task_oracle: bool = False
    """append the true task vector to every observation (oracle DT, an upper bound)"""


@dataclass
class PromptDTConfig(DTConfig):
    prompt_len: int = 5
    """K*: steps in the trajectory prompt"""
    prompt_top_fraction: float = 0.2
    """prompts come from each task's best fraction of episodes by return (the demonstrations)"""


class MultiTaskDT(DecisionTransformerAlgorithm):
    """DT on the training tasks of a multi-task dataset (``dataset`` is already the training part)."""

    name = "dt"
    Config = MetaDTConfig

    def __init__(self, config: MetaDTConfig, dataset, family, seed: int = 0, device="cpu"):
        self.family = family
        if config.task_oracle:
            dataset = with_task_vectors(dataset, family)
        super().__init__(config, dataset, seed, device)

    def evaluate_policy(self, policy, run) -> list[dict]:
        """The held-out tasks, ``run.eval_episodes`` episodes each, without context."""
        return held_out_evals(policy, self.family, run, mode="none")

    def policy_spec(self) -> dict:
        spec = super().policy_spec()
        spec["meta"] = meta_spec(self.family, task_oracle=bool(self.config.task_oracle))
        return spec


class PromptDT(DecisionTransformerAlgorithm):
    """Prompt-DT on the training tasks; ``context_data`` (optional) holds the held-out tasks' episodes
    that periodic evaluation draws its prompts from (few-shot)."""

    name = "prompt-dt"
    Config = PromptDTConfig

    def __init__(self, config: PromptDTConfig, dataset, family, seed: int = 0, device="cpu",
                 context_data=None):
        if config.prompt_len < 1:
            raise ConfigError(f"prompt_len must be at least 1, got {config.prompt_len}")
        self.family = family
        self.context_data = context_data
        super().__init__(config, dataset, seed, device)
        self.demonstrations = best_per_task(dataset, config.prompt_top_fraction)
        self.prompt_index = TaskIndex(dataset.episode_tasks, allowed=self.demonstrations)

    def model_extras(self) -> dict:
        return {"prompt_len": self.config.prompt_len}

    def prompts(self, episodes: np.ndarray) -> dict:
        """A K*-step fragment of a demonstration of each episode's task (model units)."""
        demos = self.prompt_index.draw(episodes, self.sampler.rng)
        return self.sampler.fragments(demos, self.config.prompt_len).to_torch(self.device)

    def loss(self):
        window = self.sampler.sample()
        batch = window.to_torch(self.device)
        mask = batch["mask"]
        preds = self.model(batch["observations"], batch["actions"], batch["returns_to_go"],
                           batch["timesteps"], prompt=self.prompts(window.episode_ids))
        # Prompt-DT: DT's masked mean squared action error, prompt tokens carry no loss
        loss = ((preds - batch["actions"]) ** 2)[mask].mean()
        return loss, {}

    def evaluate_policy(self, policy, run) -> list[dict]:
        """Few-shot on the held-out tasks: prompts from their best episodes in ``context_data``
        (without such data, mode "none": an empty prompt)."""
        mode = "few-shot" if self.context_data is not None else "none"
        return held_out_evals(policy, self.family, run, mode=mode, context_dataset=self.context_data,
                              fragment_len=self.config.prompt_len)

    def policy_spec(self) -> dict:
        spec = super().policy_spec()
        spec["meta"] = meta_spec(self.family, prompt_top_fraction=self.config.prompt_top_fraction)
        return spec


def held_out_evals(policy, family, run, **protocol) -> list[dict]:
    """``evaluate_meta`` on the held-out tasks, ``run.eval_episodes`` episodes each, per target return."""
    from seqrl.eval.meta import evaluate_meta

    return [evaluate_meta(policy, family, family.test_ids, rounds=run.eval_episodes,
                          seed=run.seed + 1_000_000, target_return=target, **protocol)
            for target in (run.target_returns or [None])]


def held_out_demonstrations(dataset, family, fraction: float):
    """The held-out tasks' best ``fraction`` of episodes of a full multi-task dataset (Prompt-DT's
    few-shot prompts at evaluation), or None when the dataset has none of them."""
    test = np.isin(dataset.episode_tasks, family.test_ids)
    if not test.any():
        return None
    part = dataset.filter(test)
    return part.filter(best_per_task(part, fraction))
