"""Meta-test of a two-prompt meta-RL CMT run (``task_encoder=true``) with other policy prompts z.

    python benchmarks/meta_policy_prompt_rules.py RUN_DIR MODE SEED [EVAL_MODE [CONTEXT [KEY=VALUE ...]]]
    python benchmarks/meta_policy_prompt_rules.py RUN_DIR medoid SEED zero-shot '' prompt_source=stored rounds=10
    python benchmarks/meta_policy_prompt_rules.py sweep RUN_DIR SEED >> RESULTS.jsonl
    python benchmarks/meta_policy_prompt_rules.py table RESULTS.jsonl [RESULTS.jsonl ...]

Prints one JSON line: the held-out return of ``seqrl eval RUN_DIR --mode EVAL_MODE [--context CONTEXT]
--episodes 3 --seed 1000000+SEED`` (zero-shot, few-shot or none) with the policy prompt chosen by MODE
(the task prompt t is untouched: from the context, else the history or the stored one). KEY=VALUE
entries change the loaded policy's spec (e.g. prompt_source=stored), except rounds=N, which sets the
number of consecutive episodes per task (default 3; a longer adaptation curve). The library is the run's own:
4 evenly spaced fragments of each training task's best episodes (``prompt_top_fraction``), as
``prepare_policy`` builds the stored prompt (``stored_vs_library_mean`` checks it: 0 when equal).
``sweep`` prints the 17 lines of the docs' table for one run: each MODE in zero-shot, few-shot with
the family's -expert and -medium data as context, and without context, then ``medoid`` zero-shot with
prompt_source=stored (the first episode does not read its own history). ``table`` prints that table
as Markdown: mean +- std over the runs, each run's value, and the zero-shot adaptation curve.
docs/meta.md ("Which policy prompt") has the ant-dir results.

MODE:
  stored     as trained (mean of the best episodes' policy prompts)
  context    policy prompt read from the context (own earlier episode)
  medoid     medoid of the best episodes' policy prompts, stored and kept after a context arrives
  library    policy prompt of the training fragment (best episodes) whose task prompt is nearest the
             context's task prompt; medoid before any context
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from meta_prompts import best_fragment_prompts, medoid  # noqa: E402

from seqrl.bench.machine import git_commit, machine_info  # noqa: E402
from seqrl.data.sources import load_source  # noqa: E402
from seqrl.envs.tasks import get_family  # noqa: E402
from seqrl.eval.meta import evaluate_meta_policy  # noqa: E402
from seqrl.policy import Policy  # noqa: E402


def library(policy, fraction: float):
    """(z, t): policy and task prompts of the fragments whose mean is the stored policy prompt."""
    m, family = policy.model, get_family(policy.spec["meta"]["family"])
    dataset = load_source(policy.spec["dataset"])
    length = int(policy.spec["model_kwargs"].get("fragment_len", 20))
    return tuple(best_fragment_prompts(encode, policy, family, dataset, length, fraction)
                 for encode in (m.encode, m.encode_task))


def patch(policy, mode, z_lib, t_lib):
    """Make ``policy`` use the policy prompt of ``mode`` (see the module docstring)."""
    m = policy.model
    centre = medoid(z_lib)
    if mode in ("medoid", "library"):
        with torch.no_grad():
            m.stored_prompt.copy_(centre)
    original = policy.set_context

    def set_context(*a, **k):
        original(*a, **k)
        if mode == "medoid":
            policy._context_policy_z = centre.expand(policy.num_envs, -1, -1).clone()
        elif mode == "library":
            p = m.prompt_len
            q = policy._context_z[:, :p].flatten(1)
            keys = t_lib[:, :p].flatten(1)
            q = q / q.norm(dim=1, keepdim=True); keys = keys / keys.norm(dim=1, keepdim=True)
            nearest = (q @ keys.T).argmax(1)
            policy._context_policy_z = z_lib[nearest].clone()
    policy.set_context = set_context


def measure(run: str, mode: str, seed: int, evmode: str = "zero-shot", context: str | None = None,
            extra: dict | None = None, rounds: int = 3) -> dict:
    extra = extra or {}
    spec = {"policy_prompt": "context"} if mode != "stored" else {}
    spec.update(extra)
    cfg = next(p for p in (Path(run) / "config.json", Path(run) / "representation" / "config.json")
               if p.exists())
    fraction = json.loads(cfg.read_text())["algo"]["prompt_top_fraction"]
    policy = Policy.load(run, **spec)
    z_lib, t_lib = library(policy, fraction)
    gap = float((policy.model.stored_prompt - z_lib.mean(0)).abs().max())
    patch(policy, mode, z_lib, t_lib)
    ev = evaluate_meta_policy(policy, mode=evmode, rounds=rounds, context=context, seed=1_000_000 + seed)
    return {"run": run, "mode": mode, "eval": evmode, "context": context, "extra": extra,
            **({"rounds": rounds} if rounds != 3 else {}),
            "return_mean": ev["return_mean"], "curve": ev["curve"],
            "per_task": [t["return_mean"] for t in ev["per_task"]], "seconds": ev["seconds"],
            "stored_vs_library_mean": gap, "library": len(z_lib), "commit": git_commit(),
            "machine": machine_info()["cpu"], "torch_threads": torch.get_num_threads()}


MODES = ("stored", "context", "medoid", "library")


def sweep(run: str, seed: int):
    family = Policy.load(run).spec["meta"]["family"]
    for mode in MODES:
        for evmode, context in (("zero-shot", None), ("few-shot", f"{family}-expert"),
                                ("few-shot", f"{family}-medium"), ("none", None)):
            print(json.dumps(measure(run, mode, seed, evmode, context)), flush=True)
    print(json.dumps(measure(run, "medoid", seed, "zero-shot", None, {"prompt_source": "stored"})),
          flush=True)


def table(paths: list[str]) -> str:
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line]
    runs = list(dict.fromkeys(r["run"] for r in rows))
    cols = (("zero-shot", None), ("few-shot", "-medium"), ("few-shot", "-expert"), ("none", None))

    def cell(mode, evmode, suffix, extra):
        hits = {r["run"]: r for r in rows if r["mode"] == mode and r["eval"] == evmode
                and r.get("rounds", 3) == 3 and r["extra"] == extra and (suffix is None or (r["context"] or "").endswith(suffix))}
        if len(hits) != len(runs):
            return ""
        values = np.array([hits[run]["return_mean"] for run in runs])
        text = (f"{values.mean():.1f} +- {values.std():.1f} (" + ", ".join(f"{v:.1f}" for v in values)
                + ")")
        if evmode == "zero-shot":
            curve = np.mean([hits[run]["curve"] for run in runs], axis=0)
            text += "; episodes " + ", ".join(f"{c:.0f}" for c in curve)
        return text

    head = (f"| policy prompt ({len(runs)} runs: mean +- std (per run)) | zero-shot | few-shot medium"
            " | few-shot expert | no context |\n|---|---|---|---|---|\n")
    lines = [f"| `{m}` | " + " | ".join(cell(m, e, c, {}) for e, c in cols) + " |" for m in MODES]
    lines.append("| `medoid`, `prompt_source=stored` | "
                 + cell("medoid", "zero-shot", None, {"prompt_source": "stored"}) + " | | | |")
    return head + "\n".join(lines) + "\n\nRuns: " + ", ".join(runs) + "\n"


def main():
    if sys.argv[1] == "sweep":
        return sweep(sys.argv[2], int(sys.argv[3]))
    if sys.argv[1] == "table":
        return print(table(sys.argv[2:]), end="")
    run, mode, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    evmode = sys.argv[4] if len(sys.argv) > 4 else "zero-shot"
    context = (sys.argv[5] or None) if len(sys.argv) > 5 else None
    extra = dict(a.split("=") for a in sys.argv[6:])
    rounds = int(extra.pop("rounds", 3))
    print(json.dumps(measure(run, mode, seed, evmode, context, extra, rounds)))


if __name__ == "__main__":
    main()
