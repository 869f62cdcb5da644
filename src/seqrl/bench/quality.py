"""Policy quality: train algorithms on datasets over several seeds at a stated budget and tabulate the
last-checkpoint normalised scores (mean and std over seeds), as DESIGN.md's evaluation protocol asks.

Runs go to ``<runs>/<algo>-<dataset>-s<seed>``. A run that already finished with the same budget is
reused and an unfinished one is resumed, so the command can be stopped and started again. The table also
gives, per DT run, the wall-clock time (evaluation included) until an evaluation first reached
``score_threshold`` normalised points ("time to score").
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from seqrl.bench.machine import git_commit, machine_info, write_result


def _time_to_score(run_dir: Path, threshold: float) -> dict | None:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        scores = [float(v) for k, v in row.items() if k.startswith("eval_score_mean") and v]
        if scores and scores[0] >= threshold:
            return {"step": int(row["step"]), "seconds": float(row["elapsed_s"]), "score": scores[0]}
    return None


def run_quality(algos, datasets, seeds, steps: int, eval_every: int, eval_episodes: int,
                overrides: dict[str, list[str]], runs: str = "runs/quality", score_threshold: float = 50.0,
                out_dir: str | None = "benchmarks/results", name: str = "quality", command: str = "",
                progress: bool = True) -> dict:
    from seqrl.train import train

    rows = []
    for dataset in datasets:
        for algo in algos:
            per_seed = []
            for seed in seeds:
                run_dir = Path(runs) / f"{algo}-{dataset}-s{seed}"
                summary_file = run_dir / "summary.json"
                summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
                if summary is None or summary["steps"] != steps:
                    summary = train(algo, dataset, steps=steps, seed=seed, out=run_dir,
                                    eval_every=eval_every, eval_episodes=eval_episodes,
                                    overrides=overrides.get(algo, []), progress=progress,
                                    resume=(run_dir / "checkpoints" / "last.pt").exists())
                ev = summary["eval"]
                per_seed.append({"seed": seed, "score": ev["normalized_score_mean"],
                                 "return_mean": ev["return_mean"], "target_return": ev["target_return"],
                                 "episodes": len(ev["returns"]),
                                 "train_updates_per_s": summary["train_updates_per_s"],
                                 "elapsed_s": summary["elapsed_s"],
                                 "time_to_score": _time_to_score(run_dir, score_threshold),
                                 "settings": overrides.get(algo, []), "run_dir": str(run_dir)})
            scores = np.array([s["score"] for s in per_seed])
            rows.append({"dataset": dataset, "algo": algo, "score_mean": float(scores.mean()),
                         "score_std": float(scores.std()), "seeds": per_seed})
            print(f"{dataset} {algo}: {scores.mean():.1f} +- {scores.std():.1f} over seeds {list(seeds)}",
                  flush=True)
    result = {"benchmark": name, "command": command, "commit": git_commit(), "machine": machine_info(),
              "budget_updates": steps, "eval_every": eval_every, "eval_episodes": eval_episodes,
              "seeds": list(seeds), "score_threshold": score_threshold, "rows": rows}
    if out_dir:
        write_result(out_dir, name, result, _markdown(result))
    print(_markdown(result))
    return result


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Policy quality ({r['budget_updates']} updates, last checkpoint)", "",
             f"`{r['command']}` at commit `{r['commit']}` on {m.get('gpu') or m['cpu']} "
             f"({m['cores_allowed']} cores allowed). Seeds {r['seeds']}; {r['eval_episodes']} evaluation "
             f"episodes per seed at the last checkpoint; D4RL-normalised score, mean +- std over seeds.", "",
             "| dataset | algorithm | score | per seed | settings | updates/s | time to "
             f"{r['score_threshold']:g} |", "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        seeds = ", ".join(f"{s['score']:.1f}" for s in row["seeds"])
        ups = np.mean([s["train_updates_per_s"] for s in row["seeds"]])
        tts = [s["time_to_score"] for s in row["seeds"]]
        tts_text = ", ".join("not reached" if t is None else f"{_duration(t['seconds'])} (update "
                             f"{t['step']})" for t in tts)
        settings = " ".join(row["seeds"][0]["settings"]) or "defaults"
        lines.append(f"| {row['dataset']} | {row['algo']} | **{row['score_mean']:.1f} +- "
                     f"{row['score_std']:.1f}** | {seeds} | {settings} | {ups:.1f} | {tts_text} |")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
