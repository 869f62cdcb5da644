"""Meta-test for offline meta-RL: held-out tasks, context from the agent's own experience or offline data.

One environment per task, all tasks at once (one batched forward per step), for ``rounds`` consecutive
episodes per task:

* zero-shot (the CMT paper's setting, Section 4.2): the agent starts with an empty context buffer in
  each task. The first episode acts from the policy's fallback prompt (CMT: the stored prompt, then its
  own history each time the context window is refilled); before
  each later episode a context fragment (``fragment_len`` steps) is drawn from the task's buffer of
  earlier episodes: from a uniformly drawn one (``pick="random"``, default) or from the one with the
  highest return so far (``pick="best"``: the agent knows what its episodes earned). The returns per
  round are the adaptation curve.
* few-shot: before every episode a context fragment is drawn from the task's episodes in an offline
  dataset (e.g. the family's -medium or -expert data, the paper's Q4).
* none: no context at all (the policy's own fallback: history or stored prompt); what a plain
  multi-task policy does.

A policy whose spec says ``meta.task_oracle`` (oracle DT) gets the true task vector appended to every
observation. Context fragments carry their returns-to-go and timesteps as well (Prompt-DT's prompts).

Episode seeds are ``seed + 1000 * round + task position``, the same for every policy evaluated.
"""

from __future__ import annotations

import time

import numpy as np

MODES = ("zero-shot", "few-shot", "none")
PICKS = ("random", "best")


def _fragment(rng, states, actions, rewards, length):
    """A uniformly placed window of ``length`` steps of one episode (shorter episodes: all of it),
    padded to ``length``: states, actions, rewards, mask, returns-to-go (within the whole episode)
    and episode timesteps."""
    n = len(states)
    start = int(rng.integers(0, max(n - length, 0) + 1))
    stop = min(start + length, n)
    pad = length - (stop - start)
    rewards = np.asarray(rewards, np.float64)
    rtg = np.cumsum(rewards[::-1])[::-1]

    def padded(a, dtype=np.float32):
        a = np.asarray(a[start:stop], dtype)
        return np.concatenate([a, np.zeros((pad,) + a.shape[1:], dtype)]) if pad else a

    mask = np.arange(length) < stop - start
    return (padded(states), padded(actions), padded(rewards), mask, padded(rtg),
            padded(np.arange(n), np.int64))


def evaluate_meta(policy, family, task_ids, rounds: int = 3, mode: str = "zero-shot",
                  context_dataset=None, fragment_len: int = 20, seed: int = 0,
                  target_return: float | None = None, pick: str = "random") -> dict:
    """Run ``rounds`` episodes in each task of ``task_ids`` and summarise.

    Returns return_mean / return_std over all episodes, ``per_task`` (task id, parameters, returns per
    round, mean), ``curve`` (mean return over tasks per round), episode lengths, env steps and seconds.
    """
    import gymnasium as gym

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got '{mode}'")
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got '{pick}'")
    if mode == "few-shot" and context_dataset is None:
        raise ValueError("few-shot evaluation needs a context dataset")
    start = time.perf_counter()
    task_ids = list(task_ids)
    n = len(task_ids)
    rng = np.random.default_rng(seed)
    vec = gym.vector.SyncVectorEnv([lambda t=t: family.make(t) for t in task_ids])
    oracle = bool(getattr(policy, "spec", {}).get("meta", {}).get("task_oracle"))
    task_vectors = np.stack([family.task_vector(t) for t in task_ids]) if oracle else None
    offline = {}
    if mode == "few-shot":
        for pos, t in enumerate(task_ids):
            episodes = np.flatnonzero(context_dataset.episode_tasks == t)
            if len(episodes) == 0:
                raise ValueError(f"the context dataset has no episode of task {t}")
            offline[pos] = [context_dataset.episode(int(e)) for e in episodes]
    buffers = [[] for _ in range(n)]          # zero-shot: each task's earlier episodes
    returns = np.zeros((n, rounds))
    lengths = np.zeros((n, rounds), dtype=np.int64)
    act_dim = vec.single_action_space.shape[0]
    try:
        for r in range(rounds):
            obs, _ = vec.reset(seed=[seed + 1000 * r + pos for pos in range(n)])
            policy.reset(target_return=target_return, num_envs=n)
            sources = offline if mode == "few-shot" else ({p: b for p, b in enumerate(buffers)}
                                                          if mode == "zero-shot" and r > 0 else None)
            if sources:
                if mode == "zero-shot" and pick == "best":   # the task's best episode so far
                    picks = [sources[pos][int(np.argmax(returns[pos, :r]))] for pos in range(n)]
                else:
                    picks = [sources[pos][int(rng.integers(len(sources[pos])))] for pos in range(n)]
                frags = [_fragment(rng, p["observations"], p["actions"], p["rewards"], fragment_len)
                         for p in picks]
                states, actions, rewards, mask, rtg, steps = (np.stack([f[i] for f in frags])
                                                              for i in range(6))
                if oracle:  # the context's observations end with the task vector too
                    tiled = np.broadcast_to(task_vectors[:, None], (*states.shape[:2], task_vectors.shape[1]))
                    states = np.concatenate([states, tiled], axis=2).astype(np.float32)
                policy.set_context(states, actions, rewards, mask, returns_to_go=rtg, timesteps=steps)
            record = [{"observations": [], "actions": [], "rewards": []} for _ in range(n)]
            running = np.arange(n)
            reward = np.zeros(n, dtype=np.float32)
            while running.size:
                actions = np.zeros((n, act_dim), dtype=np.float32)
                seen = obs[running] if not oracle else np.concatenate(
                    [obs[running], task_vectors[running]], axis=1)
                actions[running] = policy.act(seen, reward[running])
                for pos in running:
                    record[pos]["observations"].append(obs[pos].copy())
                    record[pos]["actions"].append(actions[pos].copy())
                obs, reward, terminated, truncated, _ = vec.step(actions)
                reward = reward.astype(np.float32)
                for pos in running:
                    record[pos]["rewards"].append(float(reward[pos]))
                returns[running, r] += reward[running]
                lengths[running, r] += 1
                still = ~(terminated | truncated)[running]
                if not still.all():
                    running = running[still]
                    if running.size:
                        policy.select(still)
            for pos in range(n):
                buffers[pos].append({k: np.asarray(v, np.float32) for k, v in record[pos].items()})
    finally:
        vec.close()
    return {
        "mode": mode,
        "pick": pick if mode == "zero-shot" else None,
        "target_return": target_return,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score_mean": None,
        "normalized_score_std": None,
        "per_task": [{"task": int(t), "params": family.kwargs(t), "returns": [float(x) for x in returns[pos]],
                      "return_mean": float(returns[pos].mean())} for pos, t in enumerate(task_ids)],
        "curve": [float(x) for x in returns.mean(axis=0)],
        "returns": [float(x) for x in returns.ravel()],
        "episode_lengths": [int(x) for x in lengths.ravel()],
        "env_steps": int(lengths.sum()),
        "seconds": time.perf_counter() - start,
    }


DEFAULT_MODES = {"cmt": "zero-shot", "prompt-dt": "few-shot", "dt": "none"}


def evaluate_meta_policy(policy, mode: str | None = None, tasks: str = "test", rounds: int = 3,
                         context: str | None = None, seed: int = 0,
                         target_return: float | None = None, pick: str = "random") -> dict:
    """``evaluate_meta`` for a loaded meta-RL policy (its spec names the family): ``tasks`` "test"
    (held out) or "train"; ``mode`` default by algorithm (CMT zero-shot, Prompt-DT few-shot, DT none);
    ``context`` a dataset SOURCE for few-shot (default for Prompt-DT: the held-out tasks' best
    episodes of its own training dataset). The fragment length is the policy's (CMT's encoder
    fragment, Prompt-DT's prompt)."""
    from seqrl.data.sources import load_source
    from seqrl.envs.tasks import get_family
    from seqrl.errors import ConfigError

    meta = policy.spec.get("meta")
    if not meta:
        raise ConfigError("not a meta-RL policy (trained on a single-task dataset)")
    if not isinstance(meta, dict) or not meta.get("family"):
        raise ConfigError("the checkpoint's meta-RL entry names no task family (not a seqrl checkpoint?)")
    family = get_family(meta["family"])
    algo = policy.spec.get("algo", "cmt")
    mode = mode or DEFAULT_MODES.get(algo, "none")
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got '{mode}'")
    if context is not None and mode != "few-shot":
        raise ConfigError(f"--context is for --mode few-shot (this evaluation is {mode})")
    if tasks not in ("test", "train"):
        raise ConfigError(f"--tasks must be test or train, got '{tasks}'")
    task_ids = family.test_ids if tasks == "test" else family.train_ids
    context_dataset = None
    if mode == "few-shot":
        if context is not None:
            from seqrl.data.meta_recipes import split_meta_name

            named = split_meta_name(context)     # a generated dataset's name: (family, level), else None
            if named is not None and named[0] != family.name:
                raise ConfigError(f"context '{context}' is not a {family.name} dataset")
            # only this family's generated datasets are made on demand, never another (large) one
            context_dataset = load_source(context, make_missing=named is not None)
            if context_dataset.metadata.get("seqrl_task_family") != family.name:
                raise ConfigError(f"context '{context}' is not a {family.name} dataset")
        elif algo == "prompt-dt":
            from seqrl.algos.dt_meta import held_out_demonstrations

            full = load_source(policy.spec["dataset"])
            context_dataset = held_out_demonstrations(full, family, meta.get("prompt_top_fraction", 0.2))
        if context_dataset is None:
            raise ConfigError("few-shot evaluation needs --context DATASET (e.g. "
                              f"{family.name}-expert)")
        missing = sorted(set(task_ids) - set(context_dataset.episode_tasks.tolist()))
        if missing:
            raise ConfigError(f"the context dataset has no episode of tasks {missing}")
    if pick not in PICKS:
        raise ConfigError(f"--pick must be one of {', '.join(PICKS)}, got '{pick}'")
    if pick != "random" and mode != "zero-shot":
        raise ConfigError("--pick chooses among the agent's own episodes: it is for --mode zero-shot")
    if mode == "zero-shot" and algo == "dt":
        raise ConfigError("a DT without prompt takes no context: use --mode none")
    fragment_len = int(getattr(policy.model, "prompt_len", 0) if algo == "prompt-dt"
                       else policy.spec["model_kwargs"].get("fragment_len", 20))
    if target_return is None:
        target_return = policy.default_target_return
    result = evaluate_meta(policy, family, task_ids, rounds=rounds, mode=mode,
                           context_dataset=context_dataset, fragment_len=fragment_len, seed=seed,
                           target_return=target_return, pick=pick)
    result.update(family=family.name, tasks=tasks, context=context)
    return result
