"""Offline meta-RL benchmark (issue 6, the CMT paper's Section 4.2 and Q4): held-out-task returns of
meta CMT and the DT baselines on one multi-task dataset, several seeds, one budget.

Per seed it trains (or reuses / resumes, as ``seqrl bench quality``) four runs in ``<runs>``:
``cmt``, ``prompt-dt``, ``dt`` (multi-task, no context) and ``oracle-dt`` (dt with ``task_oracle``), then
evaluates every run on the held-out tasks for ``rounds`` consecutive episodes per task:

* CMT zero-shot (context buffer filled online; the per-round means are the adaptation curve), CMT
  few-shot with medium and with expert context (the family's -medium / -expert datasets, made on first
  use) and CMT without context (Q4's ordering: none < medium < expert);
* Prompt-DT few-shot with expert and with medium prompts;
* multi-task DT and oracle DT (no context).

Training comes first (every seed), then the evaluations, in this process or in ``eval_workers``
spawned processes. Every evaluation uses the same episode seeds. The table gives mean +- std over
seeds of each run's mean held-out return; the figure draws the adaptation curves with the baselines
as horizontal lines.

CMT variants (``cmt_variants``, e.g. ``cmt-beta0`` with ``overrides["cmt-beta0"] = ["behaviour_coef=0"]``)
are CMT runs with the settings of ``cmt`` plus their own; a variant whose own settings change the
improvement stage only reruns that stage from the same seed's ``cmt`` representation stage, so the two
differ in nothing else. Each variant gets the four CMT rows, labelled with its name. With
``policy_prompt="context"`` the variants (two-prompt runs) are evaluated with their policy prompt read
from the context too (``Policy``'s ``policy_prompt``), not the stored one.

``baselines_from`` (an earlier result JSON of this benchmark on the same dataset, budget, rounds and
seeds) trains and evaluates the CMT variants only and copies the four base runs' rows from that file;
the result names the file, its commit and machine, and the markdown says which rows are copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seqrl.errors import ConfigError

from seqrl.bench.machine import git_commit, machine_info, write_result
from seqrl.bench.quality import train_or_reuse

RUNS = (("cmt", "cmt", []), ("prompt-dt", "prompt-dt", []), ("dt", "dt", []),
        ("oracle-dt", "dt", ["task_oracle=true"]))


def _cmt_name(label: str) -> str:
    """The row-name prefix of a CMT run label: "CMT", or "CMT (variant)"."""
    return "CMT" if label == "cmt" else f"CMT ({label})"


def _cmt_rows(dataset: str, label: str) -> list[tuple[str, str, str, str | None]]:
    name = _cmt_name(label)
    medium, expert = f"{dataset}-medium", f"{dataset}-expert"
    return [(f"{name} zero-shot", label, "zero-shot", None),
            (f"{name} few-shot, expert context", label, "few-shot", expert),
            (f"{name} few-shot, medium context", label, "few-shot", medium),
            (f"{name} without context", label, "none", None)]


def protocols(dataset: str, cmt_variants=()) -> list[tuple[str, str, str, str | None]]:
    """(row label, run label, mode, context dataset) of every evaluation."""
    medium, expert = f"{dataset}-medium", f"{dataset}-expert"
    return _cmt_rows(dataset, "cmt") + [
            ("Prompt-DT few-shot, expert prompt", "prompt-dt", "few-shot", expert),
            ("Prompt-DT few-shot, medium prompt", "prompt-dt", "few-shot", medium),
            ("DT without context (multi-task)", "dt", "none", None),
            ("oracle DT (true task parameter)", "oracle-dt", "none", None)] + [
        row for label in cmt_variants for row in _cmt_rows(dataset, label)]


def run_meta_bench(dataset: str, seeds, steps: int, rounds: int = 3, overrides=None,
                   runs: str = "runs/meta", out_dir: str | None = "benchmarks/results",
                   name: str | None = None, command: str = "", progress: bool = True,
                   cmt_variants=(), baselines_from: str | None = None,
                   policy_prompt: str = "stored", eval_workers: int = 1) -> dict:
    from seqrl.algos.cmt import improvement_only

    if eval_workers < 1:
        raise ConfigError(f"--eval-workers must be positive, got {eval_workers}")

    overrides = overrides or {}
    name = name or f"meta-{dataset}"
    evals: dict[str, list[dict]] = {}
    trained: dict[str, list[dict]] = {}
    variants = [(label, "cmt", list(overrides.get("cmt", []))) for label in cmt_variants]
    base = None
    if baselines_from is not None:
        base = _load_baselines(baselines_from, dataset, steps, rounds, seeds)
        if not cmt_variants:
            raise ConfigError("--baselines-from copies the base runs: name a --cmt-variant to train")
        trained.update(base["runs"])
    _check_settings(variants if base else list(RUNS) + variants, overrides)
    for seed in seeds:
        for label, algo, settings in (variants if base else list(RUNS) + variants):
            own = list(overrides.get(label, []))
            settings = _run_settings(label, settings, overrides)
            run_dir = Path(runs) / f"{label}-{dataset}-s{seed}"
            stage = {}
            if label in cmt_variants and improvement_only(own):
                stage = dict(stage="improvement", from_dir=Path(runs) / f"cmt-{dataset}-s{seed}")
            summary = train_or_reuse(run_dir, algo, dataset, steps=steps, seed=seed, eval_every=0,
                                     eval_episodes=1, overrides=settings, progress=progress, **stage)
            rep = summary.get("representation")
            trained.setdefault(label, []).append({
                "seed": seed, "run_dir": str(run_dir), "settings": settings,
                "train_updates_per_s": (rep or summary)["train_updates_per_s"],
                "elapsed_s": summary["elapsed_s"] + (rep["elapsed_s"] if rep else 0.0)})
    jobs = []   # (seed, row, evaluation arguments), in the order of the table
    for seed in seeds:
        for row, label, mode, context in protocols(dataset, cmt_variants):
            if base and label not in cmt_variants:
                continue
            # policy_prompt "context": the variants' (two-prompt) policy prompts are read from the context
            spec = {"policy_prompt": policy_prompt} if label in cmt_variants and policy_prompt != "stored" else {}
            jobs.append((seed, row, (str(Path(runs) / f"{label}-{dataset}-s{seed}"), spec, mode, rounds,
                                     context, 1_000_000 + seed)))
    for (seed, row, _), ev in zip(jobs, _evaluations([job for _, _, job in jobs], eval_workers)):
        evals.setdefault(row, []).append({
            "seed": seed, "return_mean": ev["return_mean"], "curve": ev["curve"],
            "per_task": [(t["task"], t["return_mean"]) for t in ev["per_task"]],
            "target_return": ev["target_return"]})
        print(f"{dataset} seed {seed} {row}: {ev['return_mean']:.2f} (per episode "
              f"{', '.join(f'{x:.2f}' for x in ev['curve'])})", flush=True)
    rows = []
    for row, label, mode, context in protocols(dataset, cmt_variants):
        if base and label not in cmt_variants:
            rows.append(base["rows"][row])
            continue
        per_seed = evals[row]
        means = np.array([e["return_mean"] for e in per_seed])
        curves = np.array([e["curve"] for e in per_seed])
        rows.append({"protocol": row, "run": label, "mode": mode, "context": context,
                     "return_mean": float(means.mean()), "return_std": float(means.std()),
                     "curve_mean": curves.mean(0).tolist(), "seeds": per_seed})
    data_returns = _data_returns(dataset)
    result = {"benchmark": name, "dataset": dataset, "command": command, "commit": git_commit(),
              "machine": machine_info(), "budget_updates": steps, "rounds": rounds,
              "seeds": list(seeds), "runs": trained, "rows": rows, "data_returns": data_returns,
              "goals": _goals(rows, cmt_variants), "context_gain": _context_gain(rows, cmt_variants),
              "policy_prompt": policy_prompt,
              "eval_workers": eval_workers}
    if base:
        result["baselines_from"] = base["source"]
    markdown = _markdown(result)
    if out_dir:
        write_result(out_dir, name, result, markdown)
        _plot(result, Path(out_dir) / f"{name}.png")
    print(markdown)
    return result


def _evaluate(job, threads: int | None = None) -> dict:
    """One held-out evaluation: (run directory, Policy.load options, mode, rounds, context, seed)."""
    from seqrl.eval.meta import evaluate_meta_policy
    from seqrl.policy import Policy

    if threads is not None:          # a worker process: its share of the cores
        import torch

        torch.set_num_threads(threads)
    run_dir, spec, mode, rounds, context, seed = job
    return evaluate_meta_policy(Policy.load(run_dir, **spec), mode=mode, rounds=rounds, context=context,
                                seed=seed)


def _evaluations(jobs: list, workers: int):
    """The evaluations of ``jobs`` in their order: in this process, or ``workers`` spawned processes
    sharing the cores (each evaluation is seeded, so where it runs does not change its episodes)."""
    if workers == 1:
        yield from (_evaluate(job) for job in jobs)
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    from seqrl.data.sources import load_source

    for context in sorted({job[4] for job in jobs if job[4] is not None}):
        load_source(context, make_missing=True)      # made once here, not by several workers at once
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_evaluate, job, threads) for job in jobs]
        for future in futures:
            yield future.result()


def _run_settings(label: str, settings: list, overrides: dict) -> list:
    """A run's own settings, then those for all runs, then those for its label (``--set RUN:k=v``)."""
    return settings + list(overrides.get("all", [])) + list(overrides.get(label, []))


def _check_settings(runs, overrides: dict) -> None:
    """Every run's settings, checked before the first run trains (a bad key for the last run would
    otherwise show only after the others had trained)."""
    from seqrl.algos import get_algorithm
    from seqrl.algos.base import apply_overrides, check_settings
    from seqrl.train.api import _meta_config

    for label, algo, settings in runs:
        try:
            check_settings(apply_overrides(_meta_config(algo, get_algorithm(algo))(),
                                           _run_settings(label, settings, overrides)))
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None


def _data_returns(dataset: str) -> dict:
    """Each quality level's return on the held-out tasks (what the contexts show): the mean over those
    tasks of each task's mean episode return, so that every task weighs the same, as in the meta-test
    (a plain episode mean would weigh a task by how many short episodes it has)."""
    from seqrl.data.sources import load_source, task_return_summary

    return {dataset + level: task_return_summary(load_source(dataset + level, make_missing=True))
            ["test_task_mean_return"] for level in ("", "-medium", "-expert")}


def _load_baselines(path: str, dataset: str, steps: int, rounds: int, seeds) -> dict:
    """The base runs' rows of an earlier result of this benchmark, checked to be comparable."""
    try:
        earlier = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the baselines result '{path}': {exc}") from None
    if not isinstance(earlier, dict):
        raise ConfigError(f"'{path}' is not a result of this benchmark")
    wanted = {"dataset": dataset, "budget_updates": steps, "rounds": rounds, "seeds": list(seeds)}
    for key, value in wanted.items():
        if earlier.get(key) != value:
            raise ConfigError(f"'{path}' has {key} {earlier.get(key)!r}, this run {value!r}: not comparable")
    labels = {label for label, _, _ in RUNS}
    rows = {r["protocol"]: r for r in earlier["rows"] if r["run"] in labels}
    return {"rows": rows, "runs": {k: v for k, v in earlier["runs"].items() if k in labels},
            "source": {"file": str(path), "commit": earlier.get("commit"),
                       "machine": earlier.get("machine", {}).get("cpu"), "command": earlier.get("command")}}


def _goals(rows: list[dict], cmt_variants=()) -> dict:
    by = {r["protocol"]: r["return_mean"] for r in rows}
    goals = {}
    for label in ("cmt", *cmt_variants):
        name = _cmt_name(label)
        prefix = "" if label == "cmt" else f"{label}_"
        goals[f"{prefix}cmt_zero_shot_ge_prompt_dt_few_shot"] = (
            by[f"{name} zero-shot"] >= by["Prompt-DT few-shot, expert prompt"])
        goals[f"{prefix}q4_none_lt_medium_lt_expert"] = (
            by[f"{name} without context"] < by[f"{name} few-shot, medium context"]
            < by[f"{name} few-shot, expert context"])
    return goals


def _context_gain(rows: list[dict], cmt_variants=()) -> dict:
    """What a context adds to each CMT: its return with a context (zero-shot, medium, expert) minus the
    same runs without one, per seed (same seeds, same episode seeds) and their mean. A CMT that meets
    the goals with a gain near zero acts well without adapting."""
    by = {r["protocol"]: r for r in rows}
    gains = {}
    for label in ("cmt", *cmt_variants):
        name = _cmt_name(label)
        none = [s["return_mean"] for s in by[f"{name} without context"]["seeds"]]
        for key, protocol in (("zero_shot", "zero-shot"), ("medium", "few-shot, medium context"),
                              ("expert", "few-shot, expert context")):
            with_context = [s["return_mean"] for s in by[f"{name} {protocol}"]["seeds"]]
            per_seed = [w - n for w, n in zip(with_context, none)]
            gains[f"{label}_{key}"] = {"mean": float(np.mean(per_seed)), "per_seed": per_seed}
    return gains


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Offline meta-RL on {r['dataset']} ({r['budget_updates']} updates per stage)", "",
             f"`{r['command']}` at commit `{r['commit']}` on {m.get('gpu') or m['cpu']} "
             f"({m['cores_allowed']} cores allowed). Seeds {r['seeds']}; held-out tasks, {r['rounds']} "
             f"consecutive episodes per task; return = mean over tasks and episodes, then mean +- std "
             f"over seeds.", ""]
    if r.get("policy_prompt", "stored") != "stored":
        lines += ["The CMT variants read their policy prompt from the context as well as their task prompt "
                  "(`--policy-prompt context`; without a context, the stored one).", ""]
    if r.get("baselines_from"):
        b = r["baselines_from"]
        lines += [f"Rows of the runs cmt, prompt-dt, dt and oracle-dt copied from `{b['file']}` (commit "
                  f"`{b['commit']}` on {b['machine']}, `{b['command']}`); only the CMT variants ran here.",
                  ""]
    lines += ["| protocol | held-out return | per seed | per episode (mean over seeds) |",
             "|---|---|---|---|"]
    for row in r["rows"]:
        seeds = ", ".join(f"{s['return_mean']:.2f}" for s in row["seeds"])
        curve = ", ".join(f"{x:.2f}" for x in row["curve_mean"])
        lines.append(f"| {row['protocol']} | **{row['return_mean']:.2f} +- {row['return_std']:.2f}** | "
                     f"{seeds} | {curve} |")
    lines += ["", "Held-out tasks' return in the data (mean over the tasks of each task's mean episode "
              "return): " +
              ", ".join(f"{k} {v:.2f}" for k, v in r["data_returns"].items()) + ".", "",
              "Goals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["goals"].items()) + ".",
              ""]
    if r.get("context_gain"):
        lines += ["Context gain (return with the context minus the same CMT runs without one; mean over "
                  "seeds, then per seed): " + "; ".join(
                      f"{k} {g['mean']:+.2f} ({', '.join(f'{x:+.2f}' for x in g['per_seed'])})"
                      for k, g in r["context_gain"].items()) + ".", ""]
    lines += ["| run | settings | updates/s | wall time per seed |", "|---|---|---|---|"]
    for label, per_seed in r["runs"].items():
        ups = np.mean([s["train_updates_per_s"] for s in per_seed])
        wall = np.mean([s["elapsed_s"] for s in per_seed])
        lines.append(f"| {label} | {' '.join(per_seed[0]['settings']) or 'defaults'} | {ups:.1f} | "
                     f"{wall / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def _plot(r: dict, path: Path) -> None:
    """Adaptation curves: return per episode collected online in a held-out task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    episodes = np.arange(1, r["rounds"] + 1)
    colours = plt.get_cmap("tab20" if len(r["rows"]) > 10 else "tab10")
    for i, row in enumerate(r["rows"]):
        curve = np.array(row["curve_mean"])
        if row["mode"] == "zero-shot":
            ax.plot(episodes, curve, marker="o", lw=2, color=colours(i), label=row["protocol"])
        else:
            ax.plot(episodes, curve, ls="--", lw=1, color=colours(i), label=row["protocol"])
    ax.set_xlabel("episode in the held-out task")
    ax.set_ylabel("return (mean over tasks and seeds)")
    ax.set_title(f"{r['dataset']}: adaptation on held-out tasks")
    ax.set_xticks(episodes)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
