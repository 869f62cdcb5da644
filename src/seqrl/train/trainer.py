"""The training loop every algorithm shares.

    seed_everything(seed); algo = DecisionTransformerAlgorithm(DTConfig(), dataset, seed)
    summary = Trainer(algo, RunConfig(...), "runs/my-run").fit()

The run directory gets ``config.json``, ``metrics.csv`` (one row per log step), TensorBoard events in
``tensorboard/`` (and the same rows in Weights & Biases with ``wandb_project``),
``checkpoints/last.pt`` (atomic; model, optimiser, scheduler, RNG and sampler states, step, elapsed
time, and what the policy needs to act) and ``summary.json``.

Resuming (``resume=True``) restores all of that from the last checkpoint, drops metrics rows and
TensorBoard events written after it by the interrupted process, and goes on: with the same seed the
updates, losses and evaluations are those of an uninterrupted run (tests/test_trainer.py checks this
bit for bit). Checkpoints are taken at log steps so the running averages restart cleanly.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqrl.algos.base import Algorithm
from seqrl.errors import ConfigError
from seqrl.models.gpt import weight_decay_groups
from seqrl.train.checkpoint import (CHECKPOINT_DIR, LAST, load_checkpoint, save_checkpoint,
                                    shape_mismatch)


@dataclass
class RunConfig:
    """What a run does, apart from the algorithm's own settings."""

    algo: str
    dataset: str
    env_id: str | None = None
    steps: int = 100_000
    seed: int = 0
    eval_every: int = 10_000
    """evaluate every this many updates (and always at the end); 0: only at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, run in parallel (0: no evaluation)"""
    eval_workers: int = 1
    """processes the evaluation episodes are shared out to (seqrl.eval.evaluator; single-task runs)"""
    target_returns: list = field(default_factory=list)
    """returns the policy is conditioned on at evaluation (first one goes into summary.json's eval)"""
    reference_returns: list | None = None
    """(random, expert) returns for normalised scores"""
    log_every: int = 100
    checkpoint_every: int = 5_000
    device: str = "cpu"
    dataset_sha256: str | None = None
    """sha256 of the dataset's arrays (``seqrl.data.recipes.content_hash``): a resume, or a benchmark
    reusing the run, must see the same data under the same name"""
    wandb_project: str | None = None
    """also log the metrics rows to this Weights & Biases project (needs `pip install wandb`;
    WANDB_MODE=offline keeps the run on disk for a later `wandb sync`)"""

    def __post_init__(self):
        if self.wandb_project is not None:
            require_wandb()
        if self.steps < 1:
            raise ConfigError(f"steps must be positive, got {self.steps}")
        if self.eval_episodes < 0:
            raise ConfigError(f"eval_episodes must be >= 0, got {self.eval_episodes}")
        if self.eval_workers < 1:
            raise ConfigError(f"eval_workers must be positive, got {self.eval_workers}")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0, got {self.eval_every}")
        check_seed(self.seed)
        if not all(math.isfinite(float(t)) for t in self.target_returns):
            raise ConfigError(f"target returns must be finite numbers, got {self.target_returns}")
        check_device(self.device)


def check_seed(seed: int) -> None:
    """Seeds are what numpy and torch both take: integers in [0, 2^63)."""
    if not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed}")


def check_device(device: str) -> None:
    """ConfigError for a device torch does not know or this machine does not have."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device '{device}' (e.g. cpu, cuda, cuda:1)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}': this torch build or machine has no CUDA GPU")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{device}': MPS is not available here")


def require_wandb() -> None:
    """ConfigError unless the wandb package is installed (checked without importing it)."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("--wandb needs the wandb package: pip install wandb")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's global generator and torch (model initialisation, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Trainer:
    def __init__(self, algo: Algorithm, run: RunConfig, run_dir: str | os.PathLike, resume: bool = False,
                 progress: bool = True):
        self.algo, self.run, self.cfg = algo, run, algo.config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.model = algo.model
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(weight_decay_groups(self.model, cfg.weight_decay),
                                           lr=cfg.learning_rate, betas=tuple(cfg.betas))
        warmup = cfg.warmup_steps
        # linear warm-up then constant, as the DT reference's LambdaLR
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup > 0 else 1.0)
        self.step = 0
        self.elapsed = 0.0        # wall seconds of earlier processes of this run
        self.train_seconds = 0.0  # of which spent in updates (not evaluation)
        self.last_evals: list[dict] = []
        self.targets = list(run.target_returns) if getattr(self.model, "condition_on_returns", False) \
            else [None]
        self.columns = (["step", "loss", *algo.metric_names, "lr", "grad_norm", "updates_per_s",
                         "elapsed_s"] + [f"{name}{_suffix(t)}" for t in self.targets
                                         for name in ("eval_return_mean", "eval_score_mean",
                                                      "eval_score_std")])
        self.checkpoint_file = self.run_dir / CHECKPOINT_DIR / LAST
        self.config_record = {"run": asdict(run), "algo": asdict(cfg), "algo_name": algo.name}
        if resume and not self.run_dir.exists():  # most likely a mistyped --out: say so, then train
            print(f"warning: --resume: there is no run directory '{self.run_dir}' yet; starting a new run",
                  file=sys.stderr)
        if resume and self.checkpoint_file.is_file():
            self._restore()
        else:
            self._start_fresh()
        if cfg.compile:
            self.model.compile()

    # ------------------------------------------------------------------------------ run directory
    def _start_fresh(self) -> None:
        if self.checkpoint_file.is_file():
            raise ConfigError(f"'{self.run_dir}' already holds a run: pass --resume to continue it, or "
                              f"choose another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.json", json.dumps(self.config_record, indent=2) + "\n")
        atomic_write_text(self.run_dir / "metrics.csv", ",".join(self.columns) + "\n")
        self.purge_step = None

    def _restore(self) -> None:
        state = load_checkpoint(self.checkpoint_file)
        stored = state.get("config", {})
        if stored.get("algo_name") != self.algo.name:
            raise ConfigError(f"'{self.run_dir}' holds a {stored.get('algo_name')} run, not {self.algo.name}")
        differ = [k for k, v in asdict(self.cfg).items()
                  if json.dumps(stored["algo"].get(k)) != json.dumps(v)]
        for key in ("dataset", "seed", "env_id"):
            if stored["run"].get(key) != getattr(self.run, key):
                differ.append(key)
        from seqrl.train.api import trained_on_other_data

        if trained_on_other_data(stored["run"], self.run.dataset_sha256):
            differ.append("the dataset's contents (dataset_sha256: remade or another version?)")
        if differ:
            raise ConfigError(f"cannot resume '{self.run_dir}': settings differ from the stored run "
                              f"({', '.join(differ)}); see its config.json")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ConfigError(f"checkpoint of another shape: {shape_mismatch(exc)}") from None
        t = state["trainer"]
        self.optimizer.load_state_dict(t["optimizer"])
        self.scheduler.load_state_dict(t["scheduler"])
        self.step, self.elapsed, self.train_seconds = t["step"], t["elapsed_s"], t["train_seconds"]
        self.last_evals = t.get("last_evals", [])
        torch.set_rng_state(t["torch_rng"])
        self.algo.load_state_dict(t["algo"])
        self._restore_config_record(stored)
        # forget what the interrupted process logged after this checkpoint (and a half-written last row)
        metrics = self.run_dir / "metrics.csv"
        if metrics.is_file():
            with metrics.open() as f:
                rows = list(csv.reader(f))[1:]
        else:
            print(f"warning: '{metrics}' is missing; its rows up to step {self.step} are lost, later ones "
                  f"are written to a new one", file=sys.stderr)
            rows = []
        kept = [self.columns] + [r for r in rows if len(r) == len(self.columns) and r[0].isdigit()
                                 and int(r[0]) <= self.step]
        atomic_write_text(metrics, "".join(",".join(r) + "\n" for r in kept))
        self.purge_step = self.step + 1

    def _restore_config_record(self, stored: dict) -> None:
        """config.json is the readable copy of the run's settings; resuming trusts the checkpoint's.
        Rewrite it with the resumed run's settings (the checkpoint's, with this call's steps and
        evaluation options), saying so when it was missing, unreadable or edited."""
        path = self.run_dir / "config.json"
        try:
            current = json.loads(path.read_text())
        except (OSError, ValueError):
            current = None
        if current != json.loads(json.dumps(stored)):   # as JSON reads it back (tuples become lists)
            state = "missing" if not path.exists() else "unreadable" if current is None else "edited"
            print(f"warning: '{path}' was {state}; rewritten from the checkpoint", file=sys.stderr)
        atomic_write_text(path, json.dumps(self.config_record, indent=2) + "\n")

    def _checkpoint(self) -> None:
        self.algo.prepare_policy()
        state = {
            "policy": self.policy_spec(),
            "model": self.model.state_dict(),
            "trainer": {"step": self.step, "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                        "algo": self.algo.state_dict(), "elapsed_s": self._elapsed(),
                        "train_seconds": self.train_seconds, "last_evals": self.last_evals},
            "config": self.config_record,
        }
        save_checkpoint(state, self.checkpoint_file)

    def policy_spec(self) -> dict:
        spec = self.algo.policy_spec()
        spec.update(algo=self.algo.name, env_id=self.run.env_id, dataset=self.run.dataset,
                    target_return=self.targets[0] if self.targets else None,
                    reference_returns=self.run.reference_returns)
        return spec

    def _elapsed(self) -> float:
        return self.elapsed + (time.perf_counter() - self._t0)

    # ------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> list[dict]:
        from seqrl.eval.evaluator import evaluate_targets
        from seqrl.policy import Policy

        self.algo.prepare_policy()
        policy = Policy(self.model, self.policy_spec(), self.run.device)
        try:
            own = self.algo.evaluate_policy(policy, self.run)
            if own is not None:
                return own
            ref = self.run.reference_returns
            return evaluate_targets(policy, self.run.env_id, self.run.eval_episodes, self.targets,
                                    seed=self.run.seed + 1_000_000, reference=tuple(ref) if ref else None,
                                    workers=self.run.eval_workers)
        finally:
            self.model.train()

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        run, cfg = self.run, self.cfg
        self._t0 = time.perf_counter()
        writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.purge_step)
        metrics = (self.run_dir / "metrics.csv").open("a", newline="")
        bar = tqdm(total=run.steps, initial=self.step, desc=f"{self.algo.name} {run.dataset}",
                   unit="upd", dynamic_ncols=True, disable=not self.progress)
        tracker = self._start_wandb() if run.wandb_project else None
        sums: dict = {}
        window_start, window_steps = time.perf_counter(), 0
        device_type = torch.device(run.device).type
        if cfg.bf16 and self.step < run.steps:
            from seqrl.policy import warn_if_bf16_is_slow

            warn_if_bf16_is_slow(run.device, "bf16=true", "autocast training is about 10x slower than fp32")
        autocast = torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=cfg.bf16)
        self.model.train()
        try:
            while self.step < run.steps:
                tick = time.perf_counter()
                with autocast:
                    loss, extra = self.algo.loss()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                             if cfg.grad_clip > 0 else _grad_norm(self.model))
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                window_steps += 1
                self.train_seconds += time.perf_counter() - tick
                for key, value in {"loss": loss.detach(), "grad_norm": grad_norm, **extra}.items():
                    sums[key] = sums.get(key, 0.0) + value  # tensors: no device sync per update
                bar.update(1)

                last = self.step == run.steps
                do_eval = run.eval_episodes > 0 and (last or (run.eval_every > 0
                                                               and self.step % run.eval_every == 0))
                do_ckpt = last or self.step % run.checkpoint_every == 0 or do_eval
                if not (do_ckpt or self.step % run.log_every == 0):
                    continue
                row = {k: float(v) / window_steps for k, v in sums.items()}
                row.update(step=self.step, lr=self.scheduler.get_last_lr()[0],
                           updates_per_s=window_steps / max(time.perf_counter() - window_start, 1e-9))
                if do_eval:
                    self.last_evals = self.evaluate()
                    for ev in self.last_evals:
                        suffix = _suffix(ev["target_return"])
                        row[f"eval_return_mean{suffix}"] = ev["return_mean"]
                        row[f"eval_score_mean{suffix}"] = ev["normalized_score_mean"]
                        row[f"eval_score_std{suffix}"] = ev["normalized_score_std"]
                row["elapsed_s"] = self._elapsed()
                metrics.write(",".join(_fmt(row.get(c)) for c in self.columns) + "\n")
                metrics.flush()
                scalars = {key.replace("@", "/target_"): value for key, value in row.items()
                           if key != "step" and value is not None}
                for key, value in scalars.items():
                    writer.add_scalar(key, value, self.step)
                if tracker is not None:
                    tracker.log(scalars, step=self.step)
                postfix = {"loss": f"{row['loss']:.4f}"}
                if self.last_evals and self.last_evals[0]["normalized_score_mean"] is not None:
                    postfix["score"] = f"{self.last_evals[0]['normalized_score_mean']:.1f}"
                bar.set_postfix(postfix)
                if do_ckpt:
                    self._checkpoint()
                sums, window_start, window_steps = {}, time.perf_counter(), 0
        finally:
            bar.close()
            metrics.close()
            writer.close()
            if tracker is not None:
                tracker.finish()
        return self._write_summary()

    def _start_wandb(self):
        """A Weights & Biases run for this run directory. Its id is kept in the directory, so a resumed
        run continues the same W&B run; W&B ignores steps it has already seen, which after a resume are
        the rows between the checkpoint and the interruption, logged again with the same values."""
        import uuid

        import wandb

        id_file = self.run_dir / "wandb_id.txt"
        if not id_file.is_file():
            atomic_write_text(id_file, uuid.uuid4().hex[:16] + "\n")
        return wandb.init(project=self.run.wandb_project, id=id_file.read_text().strip(),
                          name=str(self.run_dir), dir=str(self.run_dir), config=self.config_record,
                          resume="allow")

    def _write_summary(self) -> dict:
        run = self.run
        primary = dict(self.last_evals[0]) if self.last_evals else None
        summary = {
            "algo": self.algo.name, "dataset": run.dataset, "env": run.env_id, "seed": run.seed,
            "steps": self.step,
            "train_updates_per_s": self.step / self.train_seconds if self.train_seconds else None,
            "eval": primary, "eval_all_targets": self.last_evals,
            "eval_episodes": run.eval_episodes, "elapsed_s": self._elapsed(),
            "checkpoint": str(self.checkpoint_file), "config": self.config_record,
            **self.algo.summary_extras(),
        }
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary


def _suffix(target) -> str:
    return "" if target is None else f"@{target:g}"


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _grad_norm(model: torch.nn.Module) -> torch.Tensor:
    norms = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.tensor(0.0)
