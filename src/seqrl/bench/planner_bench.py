"""Planner cost: CMT's beam search with and without a key/value cache, and acting from the prompt.

Three figures, measured in the same run on the same model (default CMT size: 128 dims, 3 generator
layers; Hopper's 11-dim states and 3-dim actions; random weights, as cost does not depend on them) and
the same windows of K steps:
  * ``plan_ms_per_state``: batched beam search with the KV cache (``plan_states`` states per call);
  * ``nocache_ms_per_state``: the same search recomputing the whole sequence for every new token, as a
    planner without a cache must (fewer states per call, it is slow); ``speedup_vs_nocache`` is the
    ratio. Both searches use the same candidate noise, and the benchmark checks their relabels agree;
  * ``act_ms_per_state``: one ``Policy.act`` step of the tuned-prompt policy for a batch of episodes,
    per episode, over a rollout of ``act_steps`` steps (so the window re-encodings are included);
    ``act_vs_plan`` = plan / act.
Timings alternate A and B over ``rounds`` rounds and report medians.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from seqrl.bench.machine import git_commit, machine_info, write_result


def _window(model, batch: int, generator: torch.Generator):
    k = model.context_len
    states = torch.randn(batch, k, model.obs_dim, generator=generator)
    actions = torch.rand(batch, k, model.act_dim, generator=generator) * 2 - 1
    rewards = torch.randn(batch, k, generator=generator)
    timesteps = torch.arange(100, 100 + k).repeat(batch, 1)
    prompt = torch.randn(batch, model.prompt_len, model.embed_dim, generator=generator)
    return prompt, states, actions, rewards, timesteps


def run_planner_bench(horizon: int = 5, beam_width: int = 8, candidates: int = 8, plan_states: int = 64,
                      nocache_states: int = 8, act_envs: int = 64, act_steps: int = 100, rounds: int = 3,
                      seed: int = 0, out_dir: str | None = "benchmarks/results", command: str = "") -> dict:
    from seqrl.models.cmt import CMT
    from seqrl.planner import beam_search, candidate_noise
    from seqrl.policy import Policy

    torch.manual_seed(seed)
    model = CMT(11, 3, dropout=0.0).eval()
    g = torch.Generator().manual_seed(seed)
    settings = dict(horizon=horizon, beam_width=beam_width, num_candidates=candidates, noise_std=0.2,
                    discount=0.99)
    plan_window = _window(model, plan_states, g)
    plan_noise = candidate_noise(plan_states, horizon, candidates, 3, g)
    nocache_window = tuple(x[:nocache_states] for x in plan_window)
    nocache_noise = plan_noise[:nocache_states]

    # correctness first: the two searches pick the same actions
    cached, _ = beam_search(model, *nocache_window, noise=nocache_noise, **settings)
    uncached, _ = beam_search(model, *nocache_window, noise=nocache_noise, use_cache=False, **settings)
    max_diff = float((cached - uncached).abs().max())

    policy = Policy(model, {"obs_mean": [0.0] * 11, "obs_std": [1.0] * 11})
    obs = torch.randn(act_steps, act_envs, 11, generator=g).numpy()

    def plan_cached():
        beam_search(model, *plan_window, noise=plan_noise, **settings)
        return plan_states

    def plan_nocache():
        beam_search(model, *nocache_window, noise=nocache_noise, use_cache=False, **settings)
        return nocache_states

    def act():
        policy.reset(num_envs=act_envs)
        for t in range(act_steps):
            policy.act(obs[t], np.zeros(act_envs, dtype=np.float32))
        return act_envs * act_steps

    timings = {"plan": [], "nocache": [], "act": []}
    with torch.no_grad():
        plan_cached(), act()  # warm-up
        for _ in range(rounds):
            for key, fn in (("plan", plan_cached), ("nocache", plan_nocache), ("act", act)):
                tick = time.perf_counter()
                count = fn()
                timings[key].append(1000 * (time.perf_counter() - tick) / count)
    plan_ms, nocache_ms, act_ms = (statistics.median(timings[k]) for k in ("plan", "nocache", "act"))
    result = {
        "benchmark": "planner", "command": command, "commit": git_commit(), "machine": machine_info(),
        "torch_threads": torch.get_num_threads(), "seed": seed,
        "settings": {**settings, "plan_states": plan_states, "nocache_states": nocache_states,
                     "act_envs": act_envs, "act_steps": act_steps, "rounds": rounds,
                     "model": "CMT 128d, generator 3 layers 1 head, encoder 2 layers, 4 prompt vectors, "
                              "K=20, obs 11, act 3"},
        "plan_ms_per_state": plan_ms, "nocache_ms_per_state": nocache_ms, "act_ms_per_state": act_ms,
        "speedup_vs_nocache": nocache_ms / plan_ms, "act_vs_plan": plan_ms / act_ms,
        "cached_vs_nocache_max_action_diff": max_diff, "rounds_ms": timings,
        "goals": {"speedup_vs_nocache": 10.0, "act_vs_plan": 50.0},
    }
    result["met"] = {k: result[k] >= v for k, v in result["goals"].items()}
    if out_dir:
        write_result(out_dir, "planner", result, _markdown(result))
    return result


def _markdown(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    ok = {True: "met", False: "MISSED"}
    return "\n".join([
        "# Planner cost (CMT improvement stage)", "",
        f"`{r['command']}` at commit `{r['commit']}` on {m.get('gpu') or m['cpu']} "
        f"({m['cores_allowed']} cores allowed, torch {r['torch_threads']} threads). {s['model']}, random "
        f"weights. Beam search: horizon {s['horizon']}, beam width {s['beam_width']}, "
        f"{s['num_candidates']} candidates per beam; {s['plan_states']} states per cached call, "
        f"{s['nocache_states']} per uncached call; acting: {s['act_envs']} episodes x {s['act_steps']} "
        f"steps. Medians of {s['rounds']} alternating rounds.", "",
        "| figure | value | goal |", "|---|---|---|",
        f"| planning with KV cache, ms per state | {r['plan_ms_per_state']:.2f} | |",
        f"| planning without cache, ms per state | {r['nocache_ms_per_state']:.2f} | |",
        f"| speedup_vs_nocache | **{r['speedup_vs_nocache']:.1f}x** | >= 10x: {ok[r['met']['speedup_vs_nocache']]} |",
        f"| acting from the tuned prompt, ms per state | {r['act_ms_per_state']:.4f} | |",
        f"| planning / acting | **{r['act_vs_plan']:.0f}x** | >= 50x: {ok[r['met']['act_vs_plan']]} |",
        f"| max difference of cached and uncached relabels | {r['cached_vs_nocache_max_action_diff']:.1e} | 0 up to float error |",
        ""])
