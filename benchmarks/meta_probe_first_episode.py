"""Zero-shot meta-test of a two-prompt meta-RL CMT run whose first episode explores: probe, then commit.

    python benchmarks/meta_probe_first_episode.py RUN_DIR SEED [--probes M] [--probe-steps S]
        [--probe-z task|medoid] [--later medoid|context|stored|commit] >> RESULTS.jsonl

In zero-shot meta-test the first episode in a new task has no context, so the agent acts from the
stored prompts and does not know the task (ant-dir: the direction; docs/meta.md, "Which policy
prompt"). Here the first episode is a small bandit over the training tasks' behaviours instead:

1. M probe tasks, spread over the training tasks by farthest-point sampling of their task prompts
   (each task's medoid; no task parameter is used, only what the encoders make of the training data);
2. each probe acts for S steps with that task's prompts (the medoid of the task's best fragments'
   task prompts, and with ``--probe-z task`` their policy prompts too; ``--probe-z medoid`` keeps the
   medoid of all training tasks' best policy prompts, the ``medoid`` rule's z) and is scored by the
   rewards of its last S/2 steps, after the gait has changed;
3. the rest of the episode acts with the best-scoring probe's prompts.

Later episodes (``--later``): ``medoid`` draws a context from the buffer as usual and reads t from it,
with the medoid policy prompt (the benchmark meta_policy_prompt_rules.py's ``medoid`` mode);
``context`` reads both prompts from it; ``stored`` reads t from it with the stored z (plain zero-shot);
``commit`` keeps the first episode's winning prompts and reads no context. Prompts change only when the context window is refilled
(every ``context_len - eval_keep`` steps after the first ``context_len``), so S must be a multiple of
that step and at least ``context_len``. Episode seeds are the bench's (1,000,000 + SEED).
Prints one JSON line (held-out return, adaptation curve, per task, the probes' scores).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from meta_prompts import best_fragment_prompts, best_fragments, fragment_prompt, medoid  # noqa: E402

from seqrl.bench.machine import git_commit, machine_info  # noqa: E402
from seqrl.data.sources import load_source  # noqa: E402
from seqrl.envs.tasks import get_family  # noqa: E402
from seqrl.eval.meta import evaluate_meta_policy  # noqa: E402
from seqrl.policy import Policy  # noqa: E402


def task_library(policy, family, dataset, length: int, fraction: float):
    """Per training task: (medoid policy prompt, medoid task prompt) of its best episodes' fragments
    (``best_fragments``, as the stored prompt is built)."""
    m = policy.model
    by_task: dict[int, tuple[list, list]] = {}
    for task, ep, start in best_fragments(family, dataset, length, fraction):
        z, t = by_task.setdefault(task, ([], []))
        z.append(fragment_prompt(m.encode, policy, ep, start, length))
        t.append(fragment_prompt(m.encode_task, policy, ep, start, length))
    tasks = sorted(by_task)
    z = torch.stack([medoid(torch.stack(by_task[k][0])) for k in tasks])
    t = torch.stack([medoid(torch.stack(by_task[k][1])) for k in tasks])
    return tasks, z, t


def spread(t: torch.Tensor, count: int) -> list[int]:
    """Farthest-point sampling of ``count`` rows of (N, P, D) prompts, from the one nearest the mean."""
    x = t.flatten(1)
    chosen = [int(((x - x.mean(0)) ** 2).sum(1).argmin())]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    while len(chosen) < count:
        chosen.append(int(dist.argmax()))
        dist = torch.minimum(dist, ((x - x[chosen[-1]]) ** 2).sum(1))
    return chosen


def install(policy, z_probe, t_probe, z_medoid, probe_steps: int, later: str, log: list):
    """Patch ``policy`` (one loaded Policy, evaluated by evaluate_meta) with probe-then-commit."""
    m, count = policy.model, len(z_probe)
    state = {"round": -1}
    original_reset, original_select = policy.reset, policy.select
    original_act, original_prompt = policy.act, policy._cmt_prompt
    original_set_context = policy.set_context

    def reset(*a, **k):
        original_reset(*a, **k)
        state["round"] += 1
        state["rows"] = np.arange(policy.num_envs)   # running environments, by task position
        if state["round"] == 0:
            state["scores"] = np.zeros((policy.num_envs, count))
            state["best"] = None

    def select(rows):
        original_select(rows)
        state["rows"] = state["rows"][np.asarray(rows)]

    def act(obs, reward=0.0):
        s = policy._t - 1   # the step whose reward arrives now
        if state["round"] == 0 and 0 <= s < count * probe_steps and s % probe_steps >= probe_steps // 2:
            state["scores"][state["rows"], s // probe_steps] += np.asarray(reward, np.float64).reshape(-1)
        return original_act(obs, reward)

    def set_context(*a, **k):
        if later == "commit":
            return            # keep acting with the first episode's winner
        original_set_context(*a, **k)
        if later == "medoid":
            policy._context_policy_z = z_medoid.expand(policy.num_envs, -1, -1).clone()
        elif later == "stored":
            policy._context_policy_z = None

    def cmt_prompt(history):
        if state["round"] > 0 and later != "commit":
            return original_prompt(history)
        if state["round"] == 0 and policy._t < count * probe_steps:
            pick = np.full(policy.num_envs, policy._t // probe_steps)
        else:
            if state["best"] is None:   # the probes are over: commit to each task's best
                state["best"] = state["scores"].argmax(1)
                log.append(state["scores"].tolist())
            pick = state["best"][state["rows"]]
        pick = torch.as_tensor(pick)
        return m.tuned(torch.cat([z_probe[pick], t_probe[pick]], dim=1))

    policy.reset, policy.select, policy.act = reset, select, act
    policy._cmt_prompt, policy.set_context = cmt_prompt, set_context


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("seed", type=int)
    ap.add_argument("--probes", type=int, default=4)
    ap.add_argument("--probe-steps", type=int, default=20)
    ap.add_argument("--later", choices=("medoid", "context", "stored", "commit"), default="medoid")
    ap.add_argument("--probe-z", choices=("task", "medoid"), default="task")
    args = ap.parse_args()
    cfg = next(p for p in (Path(args.run) / "config.json", Path(args.run) / "representation" / "config.json")
               if p.exists())
    fraction = json.loads(cfg.read_text())["algo"]["prompt_top_fraction"]
    policy = Policy.load(args.run, policy_prompt="context")
    m = policy.model
    k, step = m.context_len, m.context_len - policy.keep
    if args.probe_steps < k or args.probe_steps % step:
        sys.exit(f"error: --probe-steps must be a multiple of {step} and at least {k}")
    family = get_family(policy.spec["meta"]["family"])
    dataset = load_source(policy.spec["dataset"])
    length = int(policy.spec["model_kwargs"].get("fragment_len", 20))
    tasks, z_task, t_task = task_library(policy, family, dataset, length, fraction)
    chosen = spread(t_task, args.probes)
    z_medoid = medoid(best_fragment_prompts(m.encode, policy, family, dataset, length, fraction))
    log: list = []
    z_probe = z_task[chosen] if args.probe_z == "task" else z_medoid.expand(len(chosen), -1, -1)
    install(policy, z_probe, t_task[chosen], z_medoid, args.probe_steps, args.later, log)
    ev = evaluate_meta_policy(policy, mode="zero-shot", rounds=3, seed=1_000_000 + args.seed)
    print(json.dumps({"run": args.run, "probes": args.probes, "probe_steps": args.probe_steps,
                      "probe_z": args.probe_z, "later": args.later, "probe_tasks": [tasks[i] for i in chosen],
                      "probe_task_params": [family.kwargs(tasks[i]) for i in chosen],
                      "return_mean": ev["return_mean"], "curve": ev["curve"],
                      "per_task": [t["return_mean"] for t in ev["per_task"]],
                      "probe_scores": log[0] if log else None, "seconds": ev["seconds"],
                      "commit": git_commit(), "machine": machine_info()["cpu"],
                      "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
