"""Does the task prompt name the task by its rewards or by the behaviour that comes with it in the data?

    python benchmarks/meta_task_confound.py FAMILY RUN_DIR [RUN_DIR ...] [--name STEM]

For two-prompt meta-RL CMT runs (``--set task_encoder=true``) on a family whose tasks differ in the
reward only (seqrl.envs.relabel). A ridge probe from the task prompt t to the true task vector is fitted
on fragments of the training tasks' episodes (as benchmarks/meta_prompts.py), then scored on held-out
tasks' expert fragments in two ways:

* own: fragments of task i's expert episodes, read as task i (behaviour and rewards agree);
* relabelled: fragments of another held-out task j's expert episodes with the rewards recomputed for
  task i, read as task i. The rewards name task i; only the behaviour says j. This is what the agent
  meets zero-shot when its first episodes in an unseen task behave as in another task.

The probe error (Euclidean distance between the probe's task vector and the truth) in each case, and
for the relabelled fragments how far the probe lands from task j (the behaviour's task). A task prompt
that reads the rewards has both errors alike. Writes benchmarks/results/<name>.{json,md}
(default meta-task-confound-FAMILY).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from meta_prompts import fragment_prompt, parse_args, two_prompt_runs, write  # noqa: E402


def measure(policy, family, train, expert, relabeller, length: int, rng, per_pair: int = 4,
            per_task: int = 8) -> dict:
    m = policy.model

    def prompt(episode, start):
        return fragment_prompt(m.encode_task, policy, episode, start, length)[:m.prompt_len].flatten().numpy()

    def start_in(episode):
        return int(rng.integers(0, max(len(episode["rewards"]) - length, 0) + 1))

    x, y = [], []
    for t in family.train_ids:
        for e in rng.choice(np.flatnonzero(train.episode_tasks == t), per_task):
            ep = train.episode(int(e))
            x.append(prompt(ep, start_in(ep)))
            y.append(family.task_vector(t))
    x, y = np.c_[np.array(x), np.ones(len(x))], np.array(y, np.float64)
    weights = np.linalg.solve(x.T @ x + 1e-2 * np.eye(x.shape[1]), x.T @ y)
    vectors = {t: family.task_vector(t) for t in family.test_ids}
    own, relabelled, to_behaviour = [], [], []
    for i in family.test_ids:
        for j in family.test_ids:
            for e in rng.choice(np.flatnonzero(expert.episode_tasks == j), per_pair):
                ep = expert.episode(int(e))
                rows = expert.offsets[int(e)] + np.arange(len(ep["rewards"]))
                seen = {**ep, "rewards": relabeller.rewards(rows, i)}
                guess = np.r_[prompt(seen, start_in(seen)), 1.0] @ weights
                if i == j:
                    own.append(np.linalg.norm(guess - vectors[i]))
                else:
                    relabelled.append(np.linalg.norm(guess - vectors[i]))
                    to_behaviour.append(np.linalg.norm(guess - vectors[j]))
    spread = np.mean([np.linalg.norm(vectors[i] - vectors[j]) for i in vectors for j in vectors if i != j])
    return {"own_error": float(np.mean(own)), "relabelled_error": float(np.mean(relabelled)),
            "relabelled_distance_to_behaviour_task": float(np.mean(to_behaviour)),
            "held_out_task_spread": float(spread)}


def markdown(result: dict) -> str:
    runs = result["runs"]
    lines = [f"# Task prompt: rewards or behaviour? ({result['family']})", "",
             f"`{result['command']}` at commit `{result['commit']}` on {result['machine']['cpu']}. "
             "Probe from the task prompt to the task vector, fitted on training tasks; held-out tasks' "
             "expert fragments, own or another held-out task's relabelled to the task. Mean distance of "
             f"the probe's task vector to the truth (held-out tasks lie {runs[0]['held_out_task_spread']:.2f} "
             "apart on average).", "",
             "| run | seed | relabel_contexts | own fragments | relabelled fragments | "
             "relabelled: distance to the behaviour's task |", "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| `{r['run_dir']}` | {r['seed']} | {r['relabel_contexts']:g} | {r['own_error']:.3f} | {r['relabelled_error']:.3f} | "
                     f"{r['relabelled_distance_to_behaviour_task']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])

    from seqrl.data.sources import load_source
    from seqrl.envs.relabel import RewardRelabeller, can_relabel
    from seqrl.envs.tasks import get_family

    family = get_family(args.family)
    if not can_relabel(family):
        sys.exit(f"error: {family.name}'s tasks differ in their dynamics; nothing to relabel")
    train, expert = load_source(args.family), load_source(args.family + "-expert")
    relabeller = RewardRelabeller(family, expert)
    runs = []
    for run_dir, policy, config, seed, length in two_prompt_runs(args.runs):
        runs.append({"run_dir": run_dir, "seed": seed,
                     "relabel_contexts": float(config["algo"].get("relabel_contexts", 0.0)),
                     **measure(policy, family, train, expert, relabeller, length, np.random.default_rng(seed))})
        print(json.dumps(runs[-1]), flush=True)
    write("meta-task-confound", args, runs, markdown)


if __name__ == "__main__":
    main()
