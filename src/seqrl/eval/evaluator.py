"""Evaluate a policy: N episodes at once in a gymnasium vector environment, one batched forward per step.

Episodes are seeded ``seed, seed + 1, ...`` so two evaluations with the same seed see the same starts.
A finished episode drops out of the policy's batch (``Policy.select``); its environment copy keeps being
stepped with zero actions by the vector environment until all are done, but nothing of it is counted.
With ``video`` the first episode is rendered and written to that file (``seqrl.eval.video``).
"""

from __future__ import annotations

import time

import numpy as np

from seqrl.envs.registry import make_vec_env
from seqrl.envs.scores import normalized_score
from seqrl.eval.video import VideoRecorder, check_video_path, prefer_offscreen_gl


def evaluate(policy, env_id: str, episodes: int = 10, target_return: float | None = None,
             seed: int = 0, reference: tuple[float, float] | None = None, video=None) -> dict:
    """Run ``episodes`` episodes in parallel and summarise them.

    Returns a dict with target_return, return_mean, return_std, normalized_score_mean,
    normalized_score_std (None without reference returns), returns, episode_lengths, env_steps,
    seconds, for CMT policies ``prompt_source``, and with ``video`` (a .gif or .mp4 path) ``video``: the file written, or None and
    ``video_failure`` saying why (rendering unavailable).
    """
    start = time.perf_counter()
    video_path = None if video is None else check_video_path(video)
    if video_path is not None:
        prefer_offscreen_gl()
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
        if recorder is not None:
            fps = vec.envs[0].metadata.get("render_fps") or 30
            written = recorder.save(fps)
    finally:
        vec.close()
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
        **extras,
    }


def evaluate_targets(policy, env_id: str, episodes: int, target_returns, seed: int = 0,
                     reference: tuple[float, float] | None = None, video=None) -> list[dict]:
    """``evaluate`` once per target return (a single run with None for policies without returns).
    ``video`` records the first episode of the first target's evaluation."""
    targets = list(target_returns) or [None]
    return [evaluate(policy, env_id, episodes, target, seed, reference, video=video if i == 0 else None)
            for i, target in enumerate(targets)]
