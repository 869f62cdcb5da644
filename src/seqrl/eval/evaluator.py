"""Evaluate a policy: N episodes at once in a gymnasium vector environment, one batched forward per step.

Episodes are seeded ``seed, seed + 1, ...`` so two evaluations with the same seed see the same starts.
A finished episode drops out of the policy's batch (``Policy.select``); its environment copy keeps being
stepped with zero actions by the vector environment until all are done, but nothing of it is counted.
With ``video`` the first episode is rendered and written to that file (``seqrl.eval.video``).

Environment workers. On a machine with two or more cores the episodes are split into two halves, each
with its own copy of the policy's context (``Policy.fork``) and its vector environment in a worker
process, so the physics of one half runs while the model acts for the other: a step then costs about
the larger of the two instead of their sum (benchmarks/results/eval.md). Processes, not threads:
gymnasium's Python code around each MuJoCo step holds Python's lock, so a second thread gains little
(measured there too). Every episode sees the same starts and, as far as the model's arithmetic does not
depend on the batch's size, the same actions as in one process (tests/test_evaluator.py).
"""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np

from seqrl.envs.registry import make_vec_env
from seqrl.envs.scores import normalized_score
from seqrl.eval.video import VideoRecorder, check_video_path, prefer_offscreen_gl


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_env_workers(policy, episodes: int, video=None, env_workers: bool | None = None) -> bool:
    """Whether ``evaluate`` steps the environments in worker processes: ``env_workers`` if given, else
    when there are two cores; never for one episode, with a video, or for a policy that cannot ``fork``."""
    able = episodes >= 2 and video is None and hasattr(policy, "fork")
    if env_workers is None:
        return able and usable_cores() >= 2
    return bool(env_workers) and able


def _worker(conn, env_id: str, n: int, seed: int) -> None:
    """A worker process: make ``n`` copies, reset them with ``seed``, then step them on request."""
    vec = make_vec_env(env_id, n)
    try:
        obs, _ = vec.reset(seed=seed)
        conn.send(obs)
        while (actions := conn.recv()) is not None:
            obs, reward, terminated, truncated, _ = vec.step(actions)
            conn.send((obs, reward, terminated, truncated))
    except (EOFError, KeyboardInterrupt):  # the evaluator went away or was interrupted
        pass
    finally:
        vec.close()


class _Half:
    """Episodes ``first .. first + n - 1``: their vector environment (here or in a worker process),
    their policy and their running totals."""

    def __init__(self, policy, env_id: str, first: int, n: int, seed: int, render_first: bool,
                 in_worker: bool):
        self.policy, self.first, self.n = policy, first, n
        self.vec = self.process = self.conn = None
        if in_worker:
            methods = multiprocessing.get_all_start_methods()   # fork: no re-import, starts at once
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.conn, child = ctx.Pipe()
            self.process = ctx.Process(target=_worker, args=(child, env_id, n, seed + first),
                                       daemon=True, name="seqrl-env")
            self.process.start()
            child.close()
        else:
            self.vec = make_vec_env(env_id, n, render_first=render_first)
            self.obs, _ = self.vec.reset(seed=seed + first)   # copy i gets seed + first + i
        self.running = np.arange(n)                    # environment copies whose episode goes on
        self.returns = np.zeros(n)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.reward = np.zeros(n, dtype=np.float32)
        self.waiting = False                            # a step was sent to the worker

    def first_observation(self) -> None:
        if self.conn is not None:
            self.obs = self._receive()

    def act(self, act_dim: int) -> np.ndarray:
        actions = np.zeros((self.n, act_dim), dtype=np.float32)
        actions[self.running] = self.policy.act(self.obs[self.running], self.reward[self.running])
        return actions

    def send(self, actions: np.ndarray) -> None:
        self.conn.send(actions)
        self.waiting = True

    def _receive(self):
        try:
            return self.conn.recv()
        except EOFError:
            raise RuntimeError(f"an environment worker process stopped (exit code "
                               f"{self.process.exitcode})") from None

    def receive(self) -> np.ndarray:
        self.waiting = False
        return self.collect(self._receive())

    def collect(self, result) -> np.ndarray:
        """Book one step's result; returns which copies are done (terminated or truncated)."""
        self.obs, self.reward, terminated, truncated = result[:4]
        running = self.running
        self.returns[running] += self.reward[running]
        self.lengths[running] += 1
        done = terminated | truncated
        still = ~done[running]
        if not still.all():
            self.running = running[still]
            if self.running.size:
                self.policy.select(still)
        return done

    def close(self) -> None:
        if self.vec is not None:
            self.vec.close()
        if self.process is not None:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.terminate()
            self.conn.close()


def evaluate(policy, env_id: str, episodes: int = 10, target_return: float | None = None,
             seed: int = 0, reference: tuple[float, float] | None = None, video=None,
             env_workers: bool | None = None) -> dict:
    """Run ``episodes`` episodes in parallel and summarise them.

    ``env_workers``: step the environments in two worker processes while the model acts (module doc);
    None decides by ``use_env_workers``.
    Returns a dict with target_return, return_mean, return_std, normalized_score_mean,
    normalized_score_std (None without reference returns), returns, episode_lengths, env_steps,
    seconds, env_workers, for CMT policies ``prompt_source``, and with ``video`` (a .gif or .mp4 path)
    ``video``: the file written, or None and ``video_failure`` saying why (rendering unavailable).
    """
    from seqrl.envs.registry import env_spaces

    start = time.perf_counter()
    video_path = None if video is None else check_video_path(video)
    if video_path is not None:
        prefer_offscreen_gl()
    workers = use_env_workers(policy, episodes, video_path, env_workers)
    act_dim = env_spaces(env_id)[1]
    policies = [policy, policy.fork()] if workers else [policy]
    sizes = [episodes - episodes // 2, episodes // 2] if workers else [episodes]
    halves, recorder = [], None
    try:
        first = 0
        for pol, n in zip(policies, sizes):
            halves.append(_Half(pol, env_id, first, n, seed, video_path is not None and first == 0,
                                in_worker=workers))
            first += n
        for half in halves:
            half.first_observation()
            half.policy.reset(target_return=target_return, num_envs=half.n)
        if video_path is not None:
            recorder = VideoRecorder(halves[0].vec.envs[0], video_path)
            recorder.capture()
        with _torch_threads(usable_cores() - 1 if workers else None):
            while any(h.running.size or h.waiting for h in halves):
                for half in halves:  # act for one half while the other half's physics runs
                    if half.waiting:
                        half.receive()
                    if not half.running.size:
                        continue
                    if workers:
                        half.send(half.act(act_dim))
                        continue
                    episode0_running = half.running[0] == 0
                    done = half.collect(half.vec.step(half.act(act_dim)))
                    if recorder is not None and episode0_running:   # episode 0's frame
                        recorder.capture()
                        if done[0]:
                            recorder.stop()
        if recorder is not None:
            fps = halves[0].vec.envs[0].metadata.get("render_fps") or 30
            written = recorder.save(fps)
    finally:
        for half in halves:
            half.close()
    returns = np.concatenate([h.returns for h in halves])
    lengths = np.concatenate([h.lengths for h in halves])
    scores = normalized_score(returns, *reference) if reference is not None else None
    extras = {} if recorder is None else {"video": written, "video_failure": recorder.failure}
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
        "env_workers": workers,
        **extras,
    }


class _torch_threads:
    """Within the block torch uses ``n`` threads (None: unchanged), leaving a core to the environment
    workers."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(max(1, min(self.n, self.before)))

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)


def evaluate_targets(policy, env_id: str, episodes: int, target_returns, seed: int = 0,
                     reference: tuple[float, float] | None = None, video=None,
                     env_workers: bool | None = None) -> list[dict]:
    """``evaluate`` once per target return (a single run with None for policies without returns).
    ``video`` records the first episode of the first target's evaluation."""
    targets = list(target_returns) or [None]
    return [evaluate(policy, env_id, episodes, target, seed, reference,
                     video=video if i == 0 else None, env_workers=env_workers)
            for i, target in enumerate(targets)]
