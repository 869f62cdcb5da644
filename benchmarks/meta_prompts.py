"""What the two prompts of a trained meta-RL CMT carry, and what the generator does with them.

    python benchmarks/meta_prompts.py FAMILY RUN_DIR [RUN_DIR ...] [--name STEM]

For runs of ``seqrl train cmt --dataset FAMILY --set task_encoder=true`` (two prompts, docs/meta.md),
four measurements, no training:

1. Task probe. A ridge regression from the task prompt t (the task encoder's output for a context
   fragment) to the true task vector, fitted on fragments of the training tasks' episodes and scored
   (R^2) on fragments of the held-out tasks' episodes in the mixed, -medium and -expert data; with the
   share of the prompts' variance that lies between tasks.
2. Action sensitivity. On windows of held-out tasks' expert episodes (history of 1 step and of K steps),
   how far the generator's action moves when t is swapped for another held-out task's, and when the
   policy prompt z is the mean prompt of the training tasks' best or worst episodes; with the squared
   error to the expert's action in each case.
3. Stored policy prompt. The stored prompt is the mean of the best episodes' fragment prompts; a mean of
   prompts is not itself a prompt the generator saw in training. Compared with the medoid (the fragment
   prompt nearest that mean): returns on 10 training tasks (zero-shot, 2 episodes; the validation a
   user could run) and on the held-out tasks (zero-shot and few-shot with expert context, 3 episodes).

Episode seeds are the bench's (seed + 1,000,000 for a run of seed s). Writes
benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def fragment_prompt(encode, policy, episode, start: int, length: int) -> torch.Tensor:
    """encode() of ``length`` steps of an episode from ``start``, in model units."""
    m, sl = policy.model, slice(start, start + length)
    states = (torch.as_tensor(episode["observations"][sl]) - policy.obs_mean) / policy.obs_std
    actions = torch.as_tensor(episode["actions"][sl])
    rewards = m.normalize_reward(torch.as_tensor(episode["rewards"][sl]))
    mask = torch.ones(1, len(states), dtype=torch.bool)
    with torch.no_grad():
        return encode(states[None].float(), actions[None].float(), rewards[None].float(), mask)[0]


def random_prompt(encode, policy, dataset, episodes, rng, length: int) -> torch.Tensor:
    ep = dataset.episode(int(rng.choice(episodes)))
    start = int(rng.integers(0, max(len(ep["rewards"]) - length, 0) + 1))
    return fragment_prompt(encode, policy, ep, start, length)


def task_probe(policy, family, datasets: dict, length: int, rng, per_task: int = 16) -> dict:
    m = policy.model

    def prompts(ds, tasks):
        x, y, who = [], [], []
        for t in tasks:
            eps = np.flatnonzero(ds.episode_tasks == t)
            for _ in range(per_task):
                x.append(random_prompt(m.encode_task, policy, ds, eps, rng, length).flatten().numpy())
                y.append(family.task_vector(t))
                who.append(t)
        return np.array(x), np.array(y, np.float64), np.array(who)

    x, y, _ = prompts(datasets["mixed"], family.train_ids)
    xb = np.c_[x, np.ones(len(x))]
    weights = np.linalg.solve(xb.T @ xb + 1e-2 * np.eye(xb.shape[1]), xb.T @ y)
    out = {}
    for name, ds in datasets.items():
        x, y, who = prompts(ds, family.test_ids)
        pred = np.c_[x, np.ones(len(x))] @ weights
        r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
        centre = x.mean(0)
        between = sum(((x[who == t].mean(0) - centre) ** 2).sum() * (who == t).sum() for t in np.unique(who))
        out[name] = {"held_out_r2": float(r2), "between_task_share": float(between / ((x - centre) ** 2).sum())}
    return out


def quality_prompts(policy, train, family, length: int, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean policy prompt of each training task's best episode, and of its worst."""
    best, worst = [], []
    for t in family.train_ids:
        eps = np.flatnonzero(train.episode_tasks == t)
        order = eps[np.argsort(train.episode_returns[eps])]
        best.append(random_prompt(policy.model.encode, policy, train, order[-1:], rng, length))
        worst.append(random_prompt(policy.model.encode, policy, train, order[:1], rng, length))
    return torch.stack(best).mean(0), torch.stack(worst).mean(0)


def action_sensitivity(policy, family, train, expert, length: int, rng, per_task: int = 8) -> dict:
    m = policy.model
    z_best, z_worst = quality_prompts(policy, train, family, length, rng)
    tasks = list(family.test_ids)
    out = {}
    for history in (1, m.context_len):
        rows = []
        for i, t in enumerate(tasks):
            other = tasks[(i + max(len(tasks) // 2, 1)) % len(tasks)]
            mine, theirs = (np.flatnonzero(expert.episode_tasks == k) for k in (t, other))
            long_enough = mine[np.diff(expert.offsets)[mine] >= history]   # Ant episodes can end early
            for _ in range(per_task):
                ep = expert.episode(int(rng.choice(long_enough)))
                start = int(rng.integers(0, len(ep["rewards"]) - history + 1))
                sl = slice(start, start + history)
                states = ((torch.as_tensor(ep["observations"][sl]) - policy.obs_mean) / policy.obs_std)[None]
                actions = torch.as_tensor(ep["actions"][sl])[None].float()
                rewards = m.normalize_reward(torch.as_tensor(ep["rewards"][sl]))[None].float()
                steps = torch.arange(start, start + history)[None]
                t_right = random_prompt(m.encode_task, policy, expert, mine, rng, length)
                t_other = random_prompt(m.encode_task, policy, expert, theirs, rng, length)

                def act(z, task_prompt):
                    prompt = m.tuned(torch.cat([z, task_prompt])[None])
                    with torch.no_grad():
                        out = m.generator(prompt, states.float(), actions, rewards, steps)
                    return out["action_mean"][0, -1].float()

                a_true = actions[0, -1]
                a = {"best_right": act(z_best, t_right), "best_other": act(z_best, t_other),
                     "worst_right": act(z_worst, t_right)}
                rows.append([(a["best_right"] - a["best_other"]).abs().mean().item(),
                             (a["best_right"] - a["worst_right"]).abs().mean().item()]
                            + [((v - a_true) ** 2).mean().item() for v in a.values()])
        r = np.mean(rows, axis=0)
        out[f"history_{history}"] = {
            "action_change_task_prompt": float(r[0]), "action_change_policy_prompt": float(r[1]),
            "mse_to_expert": {"best z, own task's t": float(r[2]), "best z, other task's t": float(r[3]),
                              "worst z, own task's t": float(r[4])}}
    return out


def best_fragments(family, dataset, length: int, top_fraction: float) -> list[tuple[int, dict, int]]:
    """(task, episode, start) of 4 evenly spaced fragments of each of the training tasks' best episodes,
    in dataset order: the fragments whose prompts' mean prepare_policy stores."""
    from seqrl.algos.meta import best_per_task

    keep = best_per_task(dataset, top_fraction) & np.isin(dataset.episode_tasks, list(family.train_ids))
    fragments = []
    for e in np.flatnonzero(keep):
        ep = dataset.episode(int(e))
        room = max(len(ep["rewards"]) - length, 0)
        fragments += [(int(dataset.episode_tasks[e]), ep, int(room * p)) for p in np.linspace(0, 1, 4)]
    return fragments


def best_fragment_prompts(encode, policy, family, dataset, length: int, top_fraction: float) -> torch.Tensor:
    """(N, P, D) encode() of the ``best_fragments``."""
    return torch.stack([fragment_prompt(encode, policy, ep, start, length)
                        for _, ep, start in best_fragments(family, dataset, length, top_fraction)])


def medoid(prompts: torch.Tensor) -> torch.Tensor:
    """The prompt of (N, P, D) ``prompts`` nearest their mean (stored_prompt_rule=medoid)."""
    return prompts[((prompts - prompts.mean(0)) ** 2).sum((1, 2)).argmin()]


def stored_prompt_choice(policy, family, train, expert, length: int, seed: int, top_fraction: float) -> dict:
    from seqrl.eval.meta import evaluate_meta

    m = policy.model
    prompts = best_fragment_prompts(m.encode, policy, family, train, length, top_fraction)
    mean, medoid_prompt = prompts.mean(0), medoid(prompts)
    original = m.stored_prompt.clone()
    train_tasks = sorted(np.random.default_rng(0).choice(sorted(family.train_ids), 10, replace=False).tolist())
    out = {"stored_equals_mean": float((original - mean).norm())}
    for name, z in (("mean", mean), ("medoid", medoid_prompt)):
        m.stored_prompt.copy_(z)
        ep_seed = seed + 1_000_000
        out[name] = {
            "train_zero_shot": evaluate_meta(policy, family, train_tasks, 2, "zero-shot", seed=ep_seed)["return_mean"],
            "test_zero_shot": evaluate_meta(policy, family, family.test_ids, 3, "zero-shot", seed=ep_seed)["return_mean"],
            "test_few_shot_expert": evaluate_meta(policy, family, family.test_ids, 3, "few-shot",
                                                  context_dataset=expert, seed=ep_seed)["return_mean"]}
    m.stored_prompt.copy_(original)
    return out


def markdown(result: dict) -> str:
    runs = result["runs"]
    lines = [f"# What the two prompts carry ({result['family']})", "",
             f"`{result['command']}` at commit `{result['commit']}` on {result['machine']['cpu']}. Runs: "
             + ", ".join(f"`{r['run_dir']}` (seed {r['seed']})" for r in runs) + ". Mean over runs.", "",
             "**Task probe** (ridge from t to the task vector, fitted on training tasks):", "",
             "| held-out fragments from | R^2 | between-task share of t's variance |", "|---|---|---|"]
    for name in runs[0]["task_probe"]:
        r2 = np.mean([r["task_probe"][name]["held_out_r2"] for r in runs])
        share = np.mean([r["task_probe"][name]["between_task_share"] for r in runs])
        lines.append(f"| {name} data | {r2:.3f} | {share:.3f} |")
    lines += ["", "**Action sensitivity** (held-out tasks' expert windows; actions in [-1, 1]):", "",
              "| history | change from swapping t | change from best to worst z | MSE best z + own t | "
              "best z + other t | worst z + own t |", "|---|---|---|---|---|---|"]
    for h in runs[0]["action_sensitivity"]:
        rows = [r["action_sensitivity"][h] for r in runs]
        mse = [np.mean([row["mse_to_expert"][k] for row in rows]) for k in rows[0]["mse_to_expert"]]
        lines.append(f"| {h.split('_')[1]} | {np.mean([r['action_change_task_prompt'] for r in rows]):.3f} | "
                     f"{np.mean([r['action_change_policy_prompt'] for r in rows]):.3f} | "
                     + " | ".join(f"{v:.3f}" for v in mse) + " |")
    lines += ["", "**Stored policy prompt** (returns; per seed in brackets):", "",
              "| stored prompt | 10 training tasks, zero-shot | held-out, zero-shot | held-out, few-shot expert |",
              "|---|---|---|---|"]
    for name in ("mean", "medoid"):
        cells = []
        for key in ("train_zero_shot", "test_zero_shot", "test_few_shot_expert"):
            vals = [r["stored_prompt"][name][key] for r in runs]
            cells.append(f"{np.mean(vals):.1f} ({', '.join(f'{v:.1f}' for v in vals)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(description: str) -> argparse.Namespace:
    """FAMILY RUN_DIR [RUN_DIR ...] [--name STEM], for the scripts that read two-prompt runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("family")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--name", default=None)
    return parser.parse_args()


def two_prompt_runs(run_dirs):
    """(run_dir, policy, config, seed, fragment length) of each two-prompt CMT run; exits with a one-line
    error on any other run."""
    import sys

    from seqrl.policy import Policy

    torch.set_num_threads(1)
    for run_dir in run_dirs:
        policy = Policy.load(run_dir)
        if not policy.model.has_task_prompt:
            sys.exit(f"error: {run_dir} is not a two-prompt CMT run (--set task_encoder=true)")
        config = json.loads((Path(run_dir) / "config.json").read_text())
        yield run_dir, policy, config, int(config["run"]["seed"]), int(config["algo"]["fragment_len"])


def write(benchmark: str, args, runs: list, markdown_of) -> None:
    """benchmarks/results/<--name or benchmark-FAMILY>.{json,md} with the command, commit and machine."""
    import sys

    from seqrl.bench.machine import git_commit, machine_info, write_result

    result = {"benchmark": benchmark.replace("-", "_"), "family": args.family, "commit": git_commit(),
              "machine": machine_info(), "command": "python " + " ".join(sys.argv), "runs": runs}
    write_result(Path(__file__).parent / "results", args.name or f"{benchmark}-{args.family}", result,
                 markdown_of(result))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])

    from seqrl.data.sources import load_source
    from seqrl.envs.tasks import get_family

    family = get_family(args.family)
    data = {q: load_source(args.family + suffix) for q, suffix in
            (("mixed", ""), ("medium", "-medium"), ("expert", "-expert"))}
    runs = []
    for run_dir, policy, config, seed, length in two_prompt_runs(args.runs):
        rng = np.random.default_rng(seed)
        runs.append({"run_dir": run_dir, "seed": seed,
                     "task_probe": task_probe(policy, family, data, length, rng),
                     "action_sensitivity": action_sensitivity(policy, family, data["mixed"], data["expert"],
                                                              length, rng),
                     "stored_prompt": stored_prompt_choice(policy, family, data["mixed"], data["expert"], length,
                                                           seed, float(config["algo"]["prompt_top_fraction"]))})
        print(json.dumps(runs[-1]), flush=True)
    write("meta-prompts", args, runs, markdown)


if __name__ == "__main__":
    main()
