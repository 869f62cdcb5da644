"""What the offline meta-RL algorithms share (meta CMT, Prompt-DT, multi-task and oracle DT).

A multi-task dataset (seqrl.data.meta_recipes) holds every task of its family, held-out ones included,
so that few-shot evaluation can draw their offline trajectories. Training uses only the training tasks'
episodes (``training_part``), for the batches and for every normalisation statistic.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from seqrl.errors import DatasetError


def training_part(dataset):
    """The training tasks' episodes of a multi-task dataset (a new dataset), and the task family."""
    from seqrl.envs.tasks import get_family

    if dataset.episode_tasks is None or "seqrl_task_family" not in dataset.metadata:
        raise DatasetError(f"{dataset.name} is not a multi-task dataset (no episode tasks); meta-RL "
                           f"needs one such as `seqrl data make point-robot`")
    family = get_family(dataset.metadata["seqrl_task_family"])
    keep = np.isin(dataset.episode_tasks, family.train_ids)
    part = dataset.filter(keep)
    part.name = f"{dataset.name}[train tasks]"
    return part, family


class TaskIndex:
    """Episodes grouped by task, for drawing episodes of the same task as given ones (vectorised).

    ``allowed`` (E,) bool limits which episodes can be drawn (e.g. each task's best ones); every task
    must keep at least one.
    """

    def __init__(self, episode_tasks: np.ndarray, allowed: np.ndarray | None = None):
        tasks = np.asarray(episode_tasks)
        candidates = np.arange(len(tasks)) if allowed is None else np.flatnonzero(allowed)
        task_ids = np.unique(tasks)
        missing = np.setdiff1d(task_ids, tasks[candidates])
        if len(missing):
            raise ValueError(f"tasks {missing.tolist()} have no episode to draw")
        order = candidates[np.argsort(tasks[candidates], kind="stable")]
        self.episodes_by_task = order                                    # drawable episodes, by task
        self.task_start = np.searchsorted(tasks[order], task_ids)
        self.task_count = np.diff(np.append(self.task_start, len(order)))
        self.episode_slot = np.searchsorted(task_ids, tasks)             # each episode's task position

    def draw(self, episodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each of ``episodes``, a uniformly drawn (allowed) episode of the same task."""
        slot = self.episode_slot[episodes]
        pick = (rng.random(len(episodes)) * self.task_count[slot]).astype(np.int64)
        return self.episodes_by_task[self.task_start[slot] + pick]


class RankIndex:
    """For each episode, an episode of *another* task at the same within-task return rank (vectorised).

    An episode's rank q in [0, 1] is its position among its task's episodes sorted by return (0 the
    worst, 1 the best; 0.5 for a task's only episode); ``draw`` picks a uniformly drawn other task and
    the episode there whose rank is nearest to q. Meta-RL CMT with two prompts uses it for the policy
    prompt: the behaviour's quality without its task.
    """

    def __init__(self, episode_tasks: np.ndarray, episode_returns: np.ndarray):
        tasks, returns = np.asarray(episode_tasks), np.asarray(episode_returns, dtype=np.float64)
        task_ids = np.unique(tasks)
        if len(task_ids) < 2:
            raise ValueError("rank-matched episodes need at least two tasks")
        self.num_tasks = len(task_ids)
        self.order = np.lexsort((returns, tasks))                       # by task, then by return
        self.task_start = np.searchsorted(tasks[self.order], task_ids)
        self.task_count = np.diff(np.append(self.task_start, len(tasks)))
        self.episode_slot = np.searchsorted(task_ids, tasks)
        position = np.empty(len(tasks), dtype=np.int64)
        position[self.order] = np.arange(len(tasks)) - np.repeat(self.task_start, self.task_count)
        count = self.task_count[self.episode_slot]
        self.rank = np.where(count > 1, position / np.maximum(count - 1, 1), 0.5)

    def draw(self, episodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each of ``episodes``, an episode of another task with the nearest within-task rank."""
        slot = self.episode_slot[episodes]
        other = (slot + 1 + rng.integers(0, self.num_tasks - 1, size=len(episodes))) % self.num_tasks
        index = np.rint(self.rank[episodes] * (self.task_count[other] - 1)).astype(np.int64)
        return self.order[self.task_start[other] + index]


def best_per_task(dataset, fraction: float) -> np.ndarray:
    """(E,) bool: each task's best ``fraction`` of episodes by return (at least one per task), the
    stand-in for Prompt-DT's per-task expert demonstrations in a mixed dataset."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the fraction must be in (0, 1], got {fraction}")
    tasks, returns = dataset.episode_tasks, dataset.episode_returns
    keep = np.zeros(len(tasks), dtype=bool)
    for t in np.unique(tasks):
        mine = np.flatnonzero(tasks == t)
        count = max(1, int(round(fraction * len(mine))))
        keep[mine[np.argsort(-returns[mine], kind="stable")[:count]]] = True
    return keep


def with_task_vectors(dataset, family):
    """A copy of ``dataset`` whose observations end with each episode's true task vector (oracle DT)."""
    vectors = np.stack([family.task_vector(int(t)) for t in range(len(family.tasks))])
    per_step = vectors[dataset.episode_tasks[dataset.episode_of_step]]

    def extend(obs):
        return None if obs is None else np.concatenate([obs, per_step], axis=1).astype(np.float32)

    return replace(dataset, observations=extend(dataset.observations),
                   next_observations=extend(dataset.next_observations), name=f"{dataset.name}+task")


def meta_spec(family, **extra) -> dict:
    """The ``meta`` entry of a policy spec: the family and its split (and e.g. task_oracle)."""
    return {"family": family.name, "train_tasks": family.train_ids, "test_tasks": family.test_ids,
            **extra}
