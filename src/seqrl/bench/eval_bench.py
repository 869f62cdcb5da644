"""Evaluation cost: what one environment step costs when a Decision Transformer drives it.

Three ways to evaluate, measured in the same run on HalfCheetah-v5 (episodes always last 1000 steps,
so every way does the same amount of environment work):
  * raw: the same vector environment stepped without a model - the floor. Twice: with uniform random
    actions, and replaying the actions seqrl's evaluation took from the same starts, which repeats its
    physics exactly (a MuJoCo step costs more or less with the contacts the actions lead to; the result
    records both). The replay is the floor the target compares with. Both raw timings include making and
    resetting the environments, as seqrl's evaluation time does;
  * seqrl: ``seqrl.eval.evaluate`` with N episodes in parallel, one batched forward per step with the
    KV cache (default context rule in fp32 and in bf16, and the reference rule eval_keep = K - 1);
  * seqrl with W worker processes (``evaluate(..., workers=W)``, W = the cores allowed, at least 2):
    the episodes shared out to W processes, one torch thread each, the processes started beforehand
    (their start-up is recorded apart). Its floor is recorded twice: the issue's raw step (one
    process) and the raw step in the same W-process layout (the physics on every core as well);
  * sequential full context: one environment, the last K steps re-encoded by a full forward at every
    step, as the DT reference code evaluates (re-implemented here).
Targets (issue 4): seqrl's wall time per environment step <= 2x the raw step, and >= 8x faster than the
sequential full-context evaluation. The model has the DT paper's size with random weights: cost does not
depend on the weights, and HalfCheetah episodes never end early.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from seqrl.bench.machine import git_commit, machine_info, write_result

TARGETS = {"seqrl_vs_raw_step": 2.0, "speedup_vs_sequential": 8.0}


def _raw_step_seconds(env_id: str, num_envs: int, steps: int, seed: int, actions=None) -> float:
    """Wall time per environment step of the vector environment alone, reset with ``seed``, driven by
    ``actions`` (steps, num_envs, act_dim), or by uniform random actions. Like ``evaluate``'s seconds it
    includes making and resetting the environments."""
    from seqrl.envs.registry import env_spaces, make_vec_env

    if actions is None:
        rng = np.random.default_rng(seed)
        actions = rng.uniform(-1, 1, (steps, num_envs, env_spaces(env_id)[1])).astype(np.float32)
    start = time.perf_counter()
    vec = make_vec_env(env_id, num_envs)
    vec.reset(seed=seed)
    for t in range(steps):
        vec.step(actions[t])
    elapsed = time.perf_counter() - start
    vec.close()
    return elapsed / (steps * num_envs)


def _raw_step_seconds_sharded(env_id: str, num_envs: int, steps: int, seed: int, actions,
                              workers: int) -> float:
    """Wall time per environment step of the raw replay split like ``evaluate(..., workers=workers)``:
    shard 0 here, the others in the evaluator's worker processes, all at once."""
    from seqrl.eval.evaluator import _pool

    sizes = [len(s) for s in np.array_split(np.arange(num_envs), workers)]
    starts = np.cumsum([0] + sizes[:-1])
    start = time.perf_counter()
    pool = _pool(workers - 1)
    futures = [pool.submit(_raw_step_seconds, env_id, n, steps, seed + int(lo), actions[:, lo:lo + n])
               for n, lo in zip(sizes[1:], starts[1:])]
    _raw_step_seconds(env_id, sizes[0], steps, seed, actions[:, :sizes[0]])
    for f in futures:
        f.result()
    return (time.perf_counter() - start) / (steps * num_envs)


class _Recording:
    """A policy that passes everything to ``policy`` and keeps the actions it returns."""

    def __init__(self, policy):
        self.policy, self.actions = policy, []

    def reset(self, *args, **kwargs):
        self.actions = []
        self.policy.reset(*args, **kwargs)

    def act(self, obs, reward):
        action = self.policy.act(obs, reward)
        self.actions.append(action)
        return action

    def select(self, rows):
        self.policy.select(rows)


def _model_flops_per_env_step(model, spec: dict, keep) -> float:
    """Floating-point operations of the model per environment step under context rule ``keep``
    (torch's FLOP counter over whole cycles of the window, after it has filled once)."""
    from torch.utils.flop_counter import FlopCounterMode

    from seqrl.policy import Policy

    policy = Policy(model, {**spec, "eval_keep": keep})
    policy.reset(target_return=6000.0, num_envs=1)
    obs = np.zeros(model.obs_dim, np.float32)
    k = model.context_len
    for _ in range(2 * k):
        policy.act(obs, 0.0)
    steps = 4 * (k - policy.keep)
    with FlopCounterMode(display=False) as counter:
        for _ in range(steps):
            policy.act(obs, 0.0)
    return counter.get_total_flops() / steps


def _sequential_full_context_seconds(model, env_id: str, steps: int, seed: int) -> float:
    """One environment; at every step the whole window of the last K steps goes through the model."""
    from seqrl.envs.registry import make_env

    env = make_env(env_id)
    obs, _ = env.reset(seed=seed)
    k = model.context_len
    states = torch.zeros(1, steps, model.obs_dim)
    actions = torch.zeros(1, steps, model.act_dim)
    rtg = torch.full((1, steps), 6.0)
    timesteps = torch.arange(steps)[None]
    start = time.perf_counter()
    with torch.no_grad():
        for t in range(steps):
            states[0, t] = torch.from_numpy(obs.astype(np.float32))
            lo = max(0, t - k + 1)
            a = model(states[:, lo:t + 1], actions[:, lo:t + 1], rtg[:, lo:t + 1], timesteps[:, lo:t + 1])
            actions[0, t] = a[0, -1]
            obs, reward, term, trunc, _ = env.step(a[0, -1].numpy())
            rtg[0, t + 1:t + 2] -= float(reward) / 1000.0
    elapsed = time.perf_counter() - start
    env.close()
    return elapsed / steps


def run_eval_bench(episodes: int = 40, env_id: str = "HalfCheetah-v5", sequential_steps: int = 1000,
                   seed: int = 0, out_dir: str | None = "benchmarks/results", command: str = "",
                   workers: int | None = None) -> dict:
    import os

    from seqrl.envs.registry import env_spaces
    from seqrl.eval.evaluator import evaluate, start_workers
    from seqrl.models import DecisionTransformer
    from seqrl.policy import Policy

    obs_dim, act_dim = env_spaces(env_id)
    torch.manual_seed(seed)
    model = DecisionTransformer(obs_dim, act_dim).eval()   # DT paper size: K=20, 128 dims, 3 layers
    spec = {"obs_mean": [0.0] * obs_dim, "obs_std": [1.0] * obs_dim, "return_scale": 1000.0}
    raw_random = _raw_step_seconds(env_id, episodes, 1000, seed)
    results, raw_replay = {}, {}
    for name, keep, precision in (("seqrl", None, "fp32"), ("seqrl_bf16", None, "bf16"),
                                  ("seqrl_reference_window", model.context_len - 1, "fp32")):
        torch.manual_seed(seed)   # the same weights for every way (Policy casts its model for bf16)
        weights = DecisionTransformer(obs_dim, act_dim).eval()
        policy = _Recording(Policy(weights, {**spec, "eval_keep": keep, "eval_precision": precision}))
        ev = evaluate(policy, env_id, episodes, target_return=6000.0, seed=seed)
        if min(ev["episode_lengths"]) != 1000:
            raise RuntimeError("the evaluation cost benchmark needs episodes that never end early")
        results[name] = {"seconds": ev["seconds"], "env_steps": ev["env_steps"], "precision": precision,
                         "seconds_per_env_step": ev["seconds"] / ev["env_steps"]}
        if name in ("seqrl", "seqrl_bf16"):   # each against the physics of its own actions
            raw_replay[name] = _raw_step_seconds(env_id, episodes, 1000, seed,
                                                 actions=np.stack(policy.actions))
        if name == "seqrl":
            recorded_fp32 = np.stack(policy.actions)
    raw = raw_replay["seqrl"]
    if workers is None:
        workers = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else
                      (os.cpu_count() or 2))
    startup = start_workers(workers)
    torch.manual_seed(seed)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(workers)   # the evaluator gives each of the W processes one thread
    try:
        ev = evaluate(Policy(DecisionTransformer(obs_dim, act_dim).eval(), {**spec, "eval_keep": None}),
                      env_id, episodes, target_return=6000.0, seed=seed, workers=workers)
    finally:
        torch.set_num_threads(threads_before)
    results["seqrl_workers"] = {"seconds": ev["seconds"], "env_steps": ev["env_steps"],
                                "precision": "fp32", "workers": workers, "startup_seconds": startup,
                                "seconds_per_env_step": ev["seconds"] / ev["env_steps"]}
    # the same physics in the same layout: seqrl's fp32 actions replayed by W processes at once
    raw_workers = _raw_step_seconds_sharded(env_id, episodes, 1000, seed, recorded_fp32, workers)
    # the arithmetic floor: the model's FLOPs per env step at this CPU's one-thread matmul rate
    from seqrl.bench.train_bench import matmul_peak_flops

    torch.set_num_threads(1)
    try:
        peak_1thread = matmul_peak_flops(torch.float32, "cpu", seconds=2.0, n=1024)
    finally:
        torch.set_num_threads(threads_before)
    flops = {"default": _model_flops_per_env_step(model, spec, None),
             "keep_0": _model_flops_per_env_step(model, spec, 0)}
    sequential = _sequential_full_context_seconds(model, env_id, sequential_steps, seed)
    per_step = results["seqrl"]["seconds_per_env_step"]
    per_step_bf16 = results["seqrl_bf16"]["seconds_per_env_step"]
    per_step_workers = results["seqrl_workers"]["seconds_per_env_step"]
    result = {
        "benchmark": "eval", "command": command, "commit": git_commit(), "machine": machine_info(),
        "torch_threads": torch.get_num_threads(), "env": env_id, "episodes": episodes, "seed": seed,
        "model": "DecisionTransformer K=20, 128 dims, 3 layers, 1 head (random weights)",
        "raw_env_step_us": raw * 1e6,
        "raw_env_step_random_actions_us": raw_random * 1e6,
        "seqrl_env_step_us": per_step * 1e6,
        "seqrl_reference_window_env_step_us": results["seqrl_reference_window"]["seconds_per_env_step"] * 1e6,
        "sequential_full_context_step_us": sequential * 1e6,
        "sequential_steps_measured": sequential_steps,
        "seqrl_vs_raw_step": per_step / raw,
        "speedup_vs_sequential": sequential / per_step,
        "raw_env_step_bf16_actions_us": raw_replay["seqrl_bf16"] * 1e6,
        "seqrl_bf16_env_step_us": per_step_bf16 * 1e6,
        "seqrl_bf16_vs_raw_step": per_step_bf16 / raw_replay["seqrl_bf16"],
        "speedup_bf16_vs_sequential": sequential / per_step_bf16,
        "model_flops_per_env_step": flops["default"],
        "model_flops_per_env_step_keep_0": flops["keep_0"],
        "matmul_peak_gflops_1thread": peak_1thread / 1e9,
        "arithmetic_floor_us": flops["default"] / peak_1thread * 1e6,
        "arithmetic_floor_keep_0_us": flops["keep_0"] / peak_1thread * 1e6,
        "workers": workers,
        "workers_startup_seconds": startup,
        "seqrl_workers_env_step_us": per_step_workers * 1e6,
        "raw_env_step_workers_us": raw_workers * 1e6,
        "seqrl_workers_vs_raw_step": per_step_workers / raw,
        "seqrl_workers_vs_raw_step_same_layout": per_step_workers / raw_workers,
        "speedup_workers_vs_sequential": sequential / per_step_workers,
        "runs": results, "targets": TARGETS,
    }
    result["meets_targets"] = (result["seqrl_vs_raw_step"] <= TARGETS["seqrl_vs_raw_step"]
                               and result["speedup_vs_sequential"] >= TARGETS["speedup_vs_sequential"])
    result["bf16_meets_targets"] = (
        result["seqrl_bf16_vs_raw_step"] <= TARGETS["seqrl_vs_raw_step"]
        and result["speedup_bf16_vs_sequential"] >= TARGETS["speedup_vs_sequential"])
    result["workers_meet_targets"] = (
        result["seqrl_workers_vs_raw_step"] <= TARGETS["seqrl_vs_raw_step"]
        and result["speedup_workers_vs_sequential"] >= TARGETS["speedup_vs_sequential"])
    if out_dir:
        write_result(out_dir, "eval", result, _markdown(result))
    print(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    m = r["machine"]
    return f"""# Evaluation cost ({r['env']}, {r['episodes']} episodes of 1000 steps)

`{r['command']}` at commit `{r['commit']}` on {m['cpu']} ({m['cores_allowed']} cores allowed, torch
{r['torch_threads']} threads), seed {r['seed']}. Model: {r['model']}.

| way of evaluating | wall time per environment step |
|---|---|
| raw vector-environment step, uniform random actions (no model) | {r['raw_env_step_random_actions_us']:.1f} us |
| raw vector-environment step, replaying seqrl's actions (no model; the same physics) | {r['raw_env_step_us']:.1f} us |
| seqrl, {r['episodes']} in parallel, KV cache (default context rule) | {r['seqrl_env_step_us']:.1f} us |
| raw vector-environment step, replaying seqrl's bf16 actions | {r['raw_env_step_bf16_actions_us']:.1f} us |
| seqrl, {r['episodes']} in parallel, KV cache, bf16 rollouts (eval_precision=bf16) | {r['seqrl_bf16_env_step_us']:.1f} us |
| seqrl, {r['episodes']} in parallel, reference window (eval_keep = K-1) | {r['seqrl_reference_window_env_step_us']:.1f} us |
| seqrl, {r['episodes']} episodes shared out to {r['workers']} processes (`workers={r['workers']}`, one torch thread each) | {r['seqrl_workers_env_step_us']:.1f} us |
| raw step replaying seqrl's actions in the same {r['workers']}-process layout | {r['raw_env_step_workers_us']:.1f} us |
| sequential full context (one env, window re-encoded each step; {r['sequential_steps_measured']} steps) | {r['sequential_full_context_step_us']:.1f} us |

- seqrl / raw step (replayed actions): **{r['seqrl_vs_raw_step']:.2f}x** (target <= {r['targets']['seqrl_vs_raw_step']}x);
  against uniform random actions {r['seqrl_env_step_us'] / r['raw_env_step_random_actions_us']:.2f}x
- speed-up over sequential full context: **{r['speedup_vs_sequential']:.1f}x** (target >= {r['targets']['speedup_vs_sequential']}x)
- {r['workers']} worker processes: **{r['seqrl_workers_vs_raw_step']:.2f}x** the raw step (one process, the target's floor),
  {r['seqrl_workers_vs_raw_step_same_layout']:.2f}x the raw step in the same {r['workers']}-process layout,
  **{r['speedup_workers_vs_sequential']:.1f}x** faster than sequential full context; starting the processes took
  {r['workers_startup_seconds']:.1f} s (once per Python process, not in these figures)
- the model's arithmetic: {r['model_flops_per_env_step'] / 1e6:.2f} MFLOP per environment step with the default
  context rule ({r['model_flops_per_env_step_keep_0'] / 1e6:.2f} with eval_keep = 0, no re-encoding), which at this CPU's one-thread fp32
  matmul rate measured in this run ({r['matmul_peak_gflops_1thread']:.1f} GFLOP/s, 1024x1024) takes at least
  **{r['arithmetic_floor_us']:.1f} us** ({r['arithmetic_floor_keep_0_us']:.1f} us) per environment step: one core cannot evaluate below
  {(r['raw_env_step_us'] + r['arithmetic_floor_us']) / r['raw_env_step_us']:.2f}x the raw step with the default rule ({(r['raw_env_step_us'] + r['arithmetic_floor_keep_0_us']) / r['raw_env_step_us']:.2f}x with eval_keep = 0)
- bf16 rollouts: **{r['seqrl_bf16_vs_raw_step']:.2f}x** the raw step replaying their own actions, **{r['speedup_bf16_vs_sequential']:.1f}x** faster than
  sequential full context (fp32, as the reference implementations)
"""
