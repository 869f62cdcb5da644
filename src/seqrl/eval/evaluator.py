"""Evaluate a policy: N episodes at once in a gymnasium vector environment, one batched forward per step.

Episodes are seeded ``seed, seed + 1, ...`` so two evaluations with the same seed see the same starts.
A finished episode drops out of the policy's batch (``Policy.select``); its environment copy keeps being
stepped with zero actions by the vector environment until all are done, but nothing of it is counted.
With ``video`` the first episode is rendered and written to that file (``seqrl.eval.video``).

With ``workers`` W > 1 the episodes are split into W contiguous shards, each run by its own process with
its own copy of the policy and its own vector environment (this process runs the first shard, W - 1
worker processes the others), and torch's threads are shared out among them. Physics and model then run
on every core at once, where one process leaves the other cores idle during the physics and gains little
from more threads on the model's small matrices (docs/training.md, "Evaluation cost"). Episode i keeps
its seed wherever it runs, and a sequence model's actions for one episode depend on the other episodes in
its batch only through float rounding in the matrix products (none at all in the measured case of 40
HalfCheetah episodes against two shards of 20, at one torch thread per process), so the returns equal a
one-process run's up to that rounding (tests/test_evaluator.py), as two torch thread counts do. The
worker processes are spawned once and kept for later evaluations; a script that evaluates with W > 1
needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import atexit
import time

import numpy as np

from seqrl.envs.registry import make_vec_env
from seqrl.envs.scores import normalized_score
from seqrl.errors import ConfigError
from seqrl.eval.video import VideoRecorder, check_video_path, prefer_offscreen_gl


def _run_episodes(policy, env_id: str, episodes: int, target_return, seed: int, video_path) -> dict:
    """Run ``episodes`` episodes in one vector environment; returns, lengths and the video fields."""
    vec = make_vec_env(env_id, episodes, render_first=video_path is not None)
    recorder = None
    try:
        obs, _ = vec.reset(seed=seed)
        if video_path is not None:
            recorder = VideoRecorder(vec.envs[0], video_path)
            recorder.capture()
        act_dim = vec.single_action_space.shape[0]
        policy.reset(target_return=target_return, num_envs=episodes)
        running = np.arange(episodes)                  # environment copies whose episode goes on
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        reward = np.zeros(episodes, dtype=np.float32)
        while running.size:
            actions = np.zeros((episodes, act_dim), dtype=np.float32)
            actions[running] = policy.act(obs[running], reward[running])
            obs, reward, terminated, truncated, _ = vec.step(actions)
            returns[running] += reward[running]
            lengths[running] += 1
            if recorder is not None and running[0] == 0:   # episode 0 is still going: its frame
                recorder.capture()
                if terminated[0] or truncated[0]:
                    recorder.stop()
            still = ~(terminated | truncated)[running]
            if not still.all():
                running = running[still]
                if running.size:
                    policy.select(still)
        extras = {}
        if recorder is not None:
            fps = vec.envs[0].metadata.get("render_fps") or 30
            extras = {"video": recorder.save(fps), "video_failure": recorder.failure}
    finally:
        vec.close()
    return {"returns": returns, "lengths": lengths, **extras}


def _shard_worker(model, spec: dict, device: str, threads: int, env_id: str, episodes: int,
                  target_return, seed: int) -> dict:
    """One shard in a worker process: a Policy of its own around the model sent here."""
    import torch

    from seqrl.policy import Policy

    torch.set_num_threads(threads)
    return _run_episodes(Policy(model, spec, device), env_id, episodes, target_return, seed, None)


_POOLS: dict = {}   # worker count -> a process pool kept for later evaluations (spawning costs seconds)


def _pool(size: int):
    """A pool of ``size`` spawned processes, started on first use and reused by later evaluations in this
    process (periodic evaluation during training pays the start-up once); shut down at exit."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = _POOLS.get(size)
    if pool is None:
        if not _POOLS:
            atexit.register(shutdown_workers)
        pool = _POOLS[size] = ProcessPoolExecutor(max_workers=size,
                                                  mp_context=multiprocessing.get_context("spawn"))
    return pool


def shutdown_workers() -> None:
    """Stop the worker processes kept by ``evaluate(..., workers=W)`` (also done at exit)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def _imported(seconds: float) -> int:
    """A worker's warm-up task: import what evaluation needs, then hold the process a moment so that
    each warm-up lands in a process of its own."""
    import os

    import gymnasium  # noqa: F401
    import mujoco  # noqa: F401

    import seqrl.policy  # noqa: F401

    time.sleep(seconds)
    return os.getpid()


def start_workers(workers: int) -> float:
    """Start the worker processes of ``evaluate(..., workers=workers)`` now (spawning and imports take
    seconds), e.g. before timing evaluations; returns the seconds it took."""
    start = time.perf_counter()
    if workers > 1:
        pool = _pool(workers - 1)
        for f in [pool.submit(_imported, 0.5) for _ in range(workers - 1)]:
            f.result()
    return time.perf_counter() - start


def _run_sharded(policy, env_id: str, episodes: int, target_return, seed: int, video_path,
                 workers: int) -> dict:
    """Shard 0 here, shards 1 .. workers - 1 in worker processes; results in episode order."""
    from concurrent.futures.process import BrokenProcessPool

    import torch

    if not all(hasattr(policy, name) for name in ("model", "spec", "device")):
        raise ConfigError("evaluating with workers > 1 needs a seqrl Policy (model, spec and device)")
    sizes = [len(s) for s in np.array_split(np.arange(episodes), workers)]
    starts = np.cumsum([0] + sizes[:-1])
    threads_before = torch.get_num_threads()
    threads = max(1, threads_before // workers)
    pool = _pool(workers - 1)
    futures = [pool.submit(_shard_worker, policy.model, policy.spec, str(policy.device), threads, env_id,
                           n, target_return, seed + int(start))
               for n, start in zip(sizes[1:], starts[1:])]
    torch.set_num_threads(threads)
    try:
        first = _run_episodes(policy, env_id, sizes[0], target_return, seed, video_path)
        shards = [first] + [f.result() for f in futures]
    except BrokenProcessPool:   # a worker died (killed, out of memory): the next call starts anew
        _POOLS.pop(workers - 1, None)
        raise
    finally:
        torch.set_num_threads(threads_before)
        for f in futures:
            f.cancel()
    return {"returns": np.concatenate([s["returns"] for s in shards]),
            "lengths": np.concatenate([s["lengths"] for s in shards]),
            **{k: v for k, v in first.items() if k.startswith("video")}}


def evaluate(policy, env_id: str, episodes: int = 10, target_return: float | None = None,
             seed: int = 0, reference: tuple[float, float] | None = None, video=None,
             workers: int = 1) -> dict:
    """Run ``episodes`` episodes in parallel and summarise.

    Returns a dict with target_return, return_mean, return_std, normalized_score_mean,
    normalized_score_std (None without reference returns), returns, episode_lengths, env_steps,
    seconds, workers, for CMT policies ``prompt_source``, and with ``video`` (a .gif or .mp4 path)
    ``video``: the file written, or None and ``video_failure`` saying why (rendering unavailable).
    ``workers`` > 1 runs the episodes in that many processes (module docstring).
    """
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ConfigError(f"evaluation workers must be a positive integer, got {workers!r}")
    workers = int(min(workers, episodes))
    start = time.perf_counter()
    video_path = None if video is None else check_video_path(video)
    if video_path is not None:
        prefer_offscreen_gl()
    if workers > 1:
        run = _run_sharded(policy, env_id, episodes, target_return, seed, video_path, workers)
    else:
        run = _run_episodes(policy, env_id, episodes, target_return, seed, video_path)
    returns, lengths = run["returns"], run["lengths"]
    scores = normalized_score(returns, *reference) if reference is not None else None
    extras = {k: v for k, v in run.items() if k.startswith("video")}
    if getattr(policy, "is_cmt", False):  # which prompt a CMT policy acted from
        extras["prompt_source"] = policy.prompt_source
    return {
        "target_return": None if target_return is None else float(target_return),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score_mean": None if scores is None else float(np.mean(scores)),
        "normalized_score_std": None if scores is None else float(np.std(scores)),
        "returns": [float(r) for r in returns],
        "episode_lengths": [int(n) for n in lengths],
        "env_steps": int(lengths.sum()),
        "seconds": time.perf_counter() - start,
        "workers": workers,
        **extras,
    }


def evaluate_targets(policy, env_id: str, episodes: int, target_returns, seed: int = 0,
                     reference: tuple[float, float] | None = None, video=None,
                     workers: int = 1) -> list[dict]:
    """``evaluate`` once per target return (a single run with None for policies without returns).
    ``video`` records the first episode of the first target's evaluation."""
    targets = list(target_returns) or [None]
    return [evaluate(policy, env_id, episodes, target, seed, reference,
                     video=video if i == 0 else None, workers=workers)
            for i, target in enumerate(targets)]
