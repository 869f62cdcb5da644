"""Maintainer tool: train a SAC behaviour policy (SBX or stable-baselines3) and keep actor snapshots.

Not needed to generate datasets (the chosen actors ship inside the package as small safetensors files);
needed only to re-create those actors. Install: pip install -e ".[behaviour]".

--trainer sbx (the default) is SBX, stable-baselines3's SAC in JAX: the same algorithm and defaults, the
whole update compiled by XLA, 2.3x the updates per second of stable-baselines3 on one CPU core (205 vs
90 on the 2-core AMD EPYC, Hopper-v5, batch 256). --trainer sb3 is the PyTorch original, which trained
the medium and replay actors shipped first.

    python scripts/train_behaviour.py --env hopper --steps 1000000 --seed 0 --out behaviour_runs/hopper
    python scripts/train_behaviour.py --family cheetah-vel --steps 300000 --out behaviour_runs/cheetah-vel

With --family the policy is privileged (meta-RL families, seqrl.envs.tasks.PrivilegedTasks): it sees the
task vector after the observation, and every episode runs a task drawn from the family's distribution.
With --family and --task ID it is a per-task expert instead (as Prompt-DT's and FOCAL's data): every
episode runs the family's task ID, and the policy sees the plain observation.

    python scripts/train_behaviour.py --family hopper-params --task 33 --steps 40000 --net-arch 64 64 \
        --out behaviour_runs/hopper-params-per-task/33

--net-arch sets the hidden layers of actor and critics (SAC's default is 256 256): per-task experts
use 64 64, so that forty of them ship in about 2 MB.

Every --snapshot-every steps it saves the actor (seqrl's safetensors layout, see
seqrl/policies/actor.py) and evaluates it for --eval-episodes episodes with *sampled* actions (the way
datasets are generated), appending a line to log.jsonl. It also saves the SAC model and its replay buffer
(atomically), so `--resume` continues a stopped run from its last snapshot; a resumed run is not
bit-identical to an uninterrupted one (the random generators restart). The initial (random) actor is
saved as the step-0 snapshot. --cpu N pins the run to one core, so two runs share a 2-core machine
without slowing each other.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


TRAINERS = {
    "sbx": "SBX (stable-baselines3 in JAX) SAC, default hyperparameters (256x256, batch 256, lr 3e-4)",
    "sb3": "stable-baselines3 SAC, default hyperparameters (256x256, batch 256, lr 3e-4)",
}


def export_actor(model, trainer: str, path: Path, env_id: str, step: int, extra: dict) -> None:
    from seqrl.policies.actor import save_sb3_actor, save_sbx_actor

    save = save_sbx_actor if trainer == "sbx" else save_sb3_actor
    save(model, path, env_id=env_id, metadata={"train_step": step, "trainer": TRAINERS[trainer], **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", help="single-task environment (hopper, halfcheetah, walker2d, ant)")
    which.add_argument("--family", help="meta-RL task family (cheetah-vel, point-robot, ...)")
    parser.add_argument("--task", type=int, default=None,
                        help="with --family: train a per-task expert on this task id (plain observations)")
    parser.add_argument("--net-arch", type=int, nargs="+", default=None, metavar="UNITS",
                        help="hidden layer sizes of actor and critics (default SAC's 256 256)")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-every", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (sb3)")
    parser.add_argument("--trainer", choices=sorted(TRAINERS), default="sbx")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU core")
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUT's last snapshot")
    args = parser.parse_args()
    if args.task is not None and not args.family:
        parser.error("--task needs --family")

    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.trainer == "sbx":
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
        from sbx import SAC
    else:
        from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from seqrl.envs.registry import gym_id, make_env
    from seqrl.policies.actor import load_actor

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.family:
        from seqrl.envs.tasks import PrivilegedTasks, get_family

        family = get_family(args.family)
        env_id = family.gym_id
        if args.task is not None:
            family.kwargs(args.task)  # an unknown task id stops here with the family's range

        def make(seed):
            if args.task is not None:
                return family.make(args.task)
            return PrivilegedTasks(family, seed=seed)
    else:
        env_id = gym_id(args.env)

        def make(seed):
            return make_env(args.env)
    log_path = out / "log.jsonl"
    previous = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    if previous and not (out / "latest_model.zip").exists():
        previous = []  # stopped before its first saved model: start again
        log_path.unlink()
    if previous and not args.resume:
        raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it")
    t0 = time.time() - (previous[-1]["seconds"] if previous else 0.0)

    def snapshot(model, step: int, save_model: bool) -> None:
        path = out / f"actor_{step:07d}.safetensors"
        export_actor(model, args.trainer, path, env_id, step,
                     {"seed": args.seed, **({"task": args.task} if args.task is not None else {})})
        returns = evaluate(load_actor(path), args.eval_episodes, seed=10_000 + step)
        line = {"step": step, "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)), "seconds": round(time.time() - t0, 1)}
        if save_model:
            # Model and buffer first, then the log line: a run stopped in between repeats a snapshot
            # instead of skipping one.
            save_atomically(model.save, out / "latest_model.zip")
            save_atomically(model.save_replay_buffer, out / "replay_buffer.pkl")
        with open(log_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)

    class Snapshots(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.snapshot_every == 0:
                snapshot(self.model, self.num_timesteps, save_model=True)
            return True

    def save_atomically(save, path: Path) -> None:
        tmp = path.with_name("tmp_" + path.name)
        save(tmp)
        tmp.replace(path)

    def evaluate(actor, episodes, seed):
        env = make(seed)
        rng = np.random.default_rng(seed)
        returns = []
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, total = False, 0.0
            while not done:
                obs, r, term, trunc, _ = env.step(actor.act(obs[None], rng)[0])
                total += r
                done = term or trunc
            returns.append(total)
        env.close()
        return returns

    env = make(args.seed)
    if previous and args.trainer != previous_trainer(out):
        raise SystemExit(f"error: {out} was trained with --trainer {previous_trainer(out)}")
    if previous:
        model = SAC.load(out / "latest_model.zip", env=env, device="cpu")
        model.load_replay_buffer(out / "replay_buffer.pkl")
        done = previous[-1]["step"]
        model.num_timesteps = done
        print(f"resuming {out} at step {done}", flush=True)
        model.learn(args.steps - done, callback=Snapshots(), reset_num_timesteps=False)
    else:
        policy_kwargs = {"net_arch": list(args.net_arch)} if args.net_arch else None
        model = SAC("MlpPolicy", env, seed=args.seed, verbose=0, device="cpu", policy_kwargs=policy_kwargs)
        (out / "trainer.txt").write_text(args.trainer + "\n")
        snapshot(model, 0, save_model=False)  # the random actor of the random recipe
        model.learn(args.steps, callback=Snapshots())


def previous_trainer(out: Path) -> str:
    """The trainer of an existing run (runs from before --trainer existed were stable-baselines3)."""
    path = out / "trainer.txt"
    return path.read_text().strip() if path.exists() else "sb3"


if __name__ == "__main__":
    main()
