"""Policy quality: train algorithms on datasets over several seeds at a stated budget and tabulate the
last-checkpoint normalised scores (mean and std over seeds), as DESIGN.md's evaluation protocol asks.

Runs go to ``<runs>/<label>-<dataset>-s<seed>``. A run that already finished with the same budget is
reused and an unfinished one is resumed, so the command can be stopped and started again. The table also
gives, per run, the wall-clock time (evaluation included) until an evaluation first reached
``score_threshold`` normalised points ("time to score").

Variants for ablations: an entry ``LABEL=ALGO`` in ``algos`` (e.g. ``cmt-beta0=cmt``) trains ALGO under
the name LABEL with the settings given for LABEL. A CMT variant whose settings differ from plain
``cmt``'s only in improvement-stage settings reuses that run's representation stage (same seed) and
runs the improvement stage alone. A CMT row is followed by its score without prompt tuning (the
representation stage's final evaluation).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from seqrl.bench.machine import git_commit, machine_info, write_result
from seqrl.errors import ConfigError


def _time_to_score(run_dir: Path, threshold: float) -> dict | None:
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        scores = [float(v) for k, v in row.items() if k.startswith("eval_score_mean") and v]
        if scores and scores[0] >= threshold:
            return {"step": int(row["step"]), "seconds": float(row["elapsed_s"]), "score": scores[0]}
    return None


def train_or_reuse(run_dir: Path, algo: str, dataset: str, steps: int, **train_kwargs) -> dict:
    """The summary of the run in ``run_dir``: reused when it finished with ``steps`` updates, else
    trained (resumed when a checkpoint is there) with ``seqrl.train.train``."""
    from seqrl.train import train

    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    if summary is not None and summary.get("representation", summary)["steps"] == steps:
        _check_same_data(summary, run_dir, dataset)
        return summary
    resume = any((run_dir / sub / "checkpoints" / "last.pt").exists() for sub in ("", "representation"))
    return train(algo, dataset, steps=steps, out=run_dir, resume=resume, **train_kwargs)


def _check_same_data(summary: dict, run_dir: Path, dataset: str) -> None:
    """ConfigError when a finished run was trained on other contents than ``dataset`` holds now (a
    dataset remade with other settings or a newer version under the same name)."""
    from seqrl.data.sources import load_source
    from seqrl.train.api import dataset_sha256, trained_on_other_data

    now = dataset_sha256(load_source(dataset, make_missing=True))
    if trained_on_other_data(summary.get("config", {}).get("run", {}), now):
        raise ConfigError(f"'{run_dir}' was trained on other contents of '{dataset}' than it holds now "
                          f"(remade, or another version): move the run away or pass another --runs")


def run_quality(algos, datasets, seeds, steps: int, eval_every: int, eval_episodes: int,
                overrides: dict[str, list[str]], eval_workers: int = 1, runs: str = "runs/quality",
                score_threshold: float = 50.0,
                out_dir: str | None = "benchmarks/results", name: str = "quality", command: str = "",
                progress: bool = True) -> dict:
    from seqrl.algos.cmt import improvement_only

    rows = []
    for dataset in datasets:
        for entry in algos:
            label, _, algo = entry.partition("=")
            algo = algo or label
            settings = overrides.get(label, [])
            base = set(overrides.get("cmt", []))
            reuse = algo == "cmt" and label != "cmt" and improvement_only(set(settings) - base)
            per_seed, without_pt = [], []
            for seed in seeds:
                run_dir = Path(runs) / f"{label}-{dataset}-s{seed}"
                kwargs = {}
                if reuse:  # the improvement stage alone, from plain cmt's representation stage
                    kwargs = dict(stage="improvement", from_dir=Path(runs) / f"cmt-{dataset}-s{seed}")
                summary = train_or_reuse(run_dir, algo, dataset, steps=steps, seed=seed,
                                         eval_every=eval_every, eval_episodes=eval_episodes,
                                         eval_workers=eval_workers, overrides=settings,
                                         progress=progress, **kwargs)
                per_seed.append(_seed_row(summary["eval"], summary, seed, settings, run_dir,
                                          score_threshold))
                if summary.get("eval_without_prompt_tuning"):
                    without_pt.append(_seed_row(summary["eval_without_prompt_tuning"],
                                                summary.get("representation", summary), seed, settings,
                                                run_dir / "representation", score_threshold))
            for row_name, seed_rows in ((label, per_seed),
                                        (f"{label} without prompt tuning", without_pt)):
                if not seed_rows or (row_name != label and reuse):
                    continue
                scores = np.array([s["score"] for s in seed_rows])
                rows.append({"dataset": dataset, "algo": row_name, "score_mean": float(scores.mean()),
                             "score_std": float(scores.std()), "seeds": seed_rows})
                print(f"{dataset} {row_name}: {scores.mean():.1f} +- {scores.std():.1f} over seeds "
                      f"{list(seeds)}", flush=True)
    result = {"benchmark": name, "command": command, "commit": git_commit(), "machine": machine_info(),
              "budget_updates": steps, "eval_every": eval_every, "eval_episodes": eval_episodes,
              "eval_workers": eval_workers, "seeds": list(seeds), "score_threshold": score_threshold,
              "rows": rows}
    if out_dir:
        write_result(out_dir, name, result, _markdown(result))
    print(_markdown(result))
    return result


def _seed_row(ev: dict, summary: dict, seed: int, settings, run_dir: Path, threshold: float) -> dict:
    rep = summary.get("representation")  # CMT: updates/s of the (budgeted) representation stage
    return {"seed": seed, "score": ev["normalized_score_mean"], "return_mean": ev["return_mean"],
            "target_return": ev["target_return"], "episodes": len(ev["returns"]),
            "train_updates_per_s": (rep or summary)["train_updates_per_s"],
            "elapsed_s": summary["elapsed_s"] + (rep["elapsed_s"] if rep else 0.0),
            "time_to_score": _time_to_score(run_dir, threshold) if run_dir.is_dir() else None,
            "settings": list(settings), "run_dir": str(run_dir)}


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
