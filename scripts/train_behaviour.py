"""Maintainer tool: train a SAC behaviour policy with stable-baselines3 and keep actor snapshots.

Not needed to generate datasets (the chosen actors ship inside the package as small safetensors files);
needed only to re-create those actors. Install: pip install -e ".[behaviour]".

    python scripts/train_behaviour.py --env hopper --steps 1000000 --seed 0 --out behaviour_runs/hopper
    python scripts/train_behaviour.py --family cheetah-vel --steps 300000 --out behaviour_runs/cheetah-vel

With --family the policy is privileged (meta-RL families, seqrl.envs.tasks.PrivilegedTasks): it sees the
task vector after the observation, and every episode runs a task drawn from the family's distribution.

Every --snapshot-every steps it saves the actor (seqrl's safetensors layout, see
seqrl/policies/actor.py) and evaluates it for --eval-episodes episodes with *sampled* actions (the way
datasets are generated), appending a line to log.jsonl. It also saves the SAC model and its replay buffer
(atomically), so `--resume` continues a stopped run from its last snapshot; a resumed run is not
bit-identical to an uninterrupted one (the random generators restart). A CPU core does about 100 SAC
updates/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def export_actor(model, path: Path, env_id: str, step: int, extra: dict) -> None:
    from seqrl.policies.actor import save_sb3_actor

    save_sb3_actor(model, path, env_id=env_id, metadata={"train_step": step, **extra})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--env", help="single-task environment (hopper, halfcheetah, walker2d, ant)")
    which.add_argument("--family", help="meta-RL task family (cheetah-vel, point-robot, ...)")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-every", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from OUT's last snapshot")
    args = parser.parse_args()

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

        def make(seed):
            return PrivilegedTasks(family, seed=seed)
    else:
        env_id = gym_id(args.env)

        def make(seed):
            return make_env(args.env)
    log_path = out / "log.jsonl"
    previous = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    if previous and not args.resume:
        raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it")
    t0 = time.time() - (previous[-1]["seconds"] if previous else 0.0)

    class Snapshots(BaseCallback):
        def _on_step(self) -> bool:
            step = self.num_timesteps
            if step % args.snapshot_every == 0:
                path = out / f"actor_{step:07d}.safetensors"
                export_actor(self.model, path, env_id, step, {"seed": args.seed})
                actor = load_actor(path)
                returns = evaluate(actor, args.eval_episodes, seed=10_000 + step)
                line = {"step": step, "return_mean": float(np.mean(returns)),
                        "return_std": float(np.std(returns)), "seconds": round(time.time() - t0, 1)}
                # Model and buffer first, then the log line: a run stopped in between repeats a snapshot
                # instead of skipping one.
                save_atomically(self.model.save, out / "latest_model.zip")
                save_atomically(self.model.save_replay_buffer, out / "replay_buffer.pkl")
                with open(log_path, "a") as f:
                    f.write(json.dumps(line) + "\n")
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
    if previous:
        model = SAC.load(out / "latest_model.zip", env=env, device="cpu")
        model.load_replay_buffer(out / "replay_buffer.pkl")
        done = previous[-1]["step"]
        model.num_timesteps = done
        print(f"resuming {out} at step {done}", flush=True)
        model.learn(args.steps - done, callback=Snapshots(), reset_num_timesteps=False)
    else:
        model = SAC("MlpPolicy", env, seed=args.seed, verbose=0, device="cpu")
        model.learn(args.steps, callback=Snapshots())


if __name__ == "__main__":
    main()
