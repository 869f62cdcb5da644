"""``seqrl demo``: a short tour of what seqrl does today, on data it makes itself.

1. collects a small Hopper-v5 dataset with a random policy in parallel environment copies;
2. writes it as a D4RL-layout HDF5 file and reads it back;
3. exports it as a Minari dataset (in a Minari root inside the demo folder) and reads that back;
4. draws a batch of Decision-Transformer segments and a batch of CMT fragment pairs;
5. makes a small hopper-medium dataset from the shipped behaviour policy, trains a Decision Transformer,
   a BC baseline and CMT (both stages: representation, then beam-search relabelling and prompt tuning)
   on it for a few hundred updates and evaluates them (10 episodes in parallel);
6. loads the DT policy from its run directory alone and drives one episode with ``Policy.act``.
The training budget is tiny (minutes on a laptop CPU), so the scores show the engine working, not what
DT reaches with a full budget (see docs/training.md for that).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run_demo(workdir: str = "runs/demo", steps: int = 5000, seed: int = 0, train_steps: int = 500) -> dict:
    from tqdm import tqdm

    from seqrl.data.collect import collect, random_policy
    from seqrl.data.d4rl import load_d4rl, save_d4rl
    from seqrl.data.minari_io import load_minari, minari_root_at, save_minari
    from seqrl.data.sampler import SegmentSampler
    from seqrl.data.sources import dataset_info

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"1. collecting {steps} steps of Hopper-v5 with a random policy (8 environment copies, seed {seed})")
    with tqdm(total=steps, unit="step", leave=False) as bar:
        data = collect("hopper", random_policy("hopper", seed), steps, num_envs=8, seed=seed,
                       progress=bar.update, name="hopper-random-demo")

    path = save_d4rl(data, work / "hopper-random-demo.hdf5", overwrite=True)
    loaded = load_d4rl(path)
    _check_same(data, loaded, "D4RL file")
    info = dataset_info(loaded)
    print(f"2. wrote and re-read {path}")
    print(f"   {info['episodes']} episodes, {info['steps']} steps, obs_dim {info['obs_dim']}, "
          f"act_dim {info['act_dim']}, return mean {info['return_mean']:.1f} "
          f"[{info['return_min']:.1f}, {info['return_max']:.1f}], normalised "
          f"{info['normalized_return_mean']:.2f}")

    root = work / "minari"
    with minari_root_at(root):
        save_minari(loaded, "demo/hopper/random-v0", overwrite=True)
        from_minari = load_minari("demo/hopper/random-v0")
    _check_same(data, from_minari, "Minari dataset")
    print(f"3. exported to Minari as demo/hopper/random-v0 under {root} and re-read it: identical arrays")

    sampler = SegmentSampler(loaded, context_len=20, batch_size=64, seed=seed)
    batch = sampler.sample()
    first, second = sampler.sample_fragment_pairs(length=10)
    print(f"4. DT segments: observations {batch.observations.shape}, actions {batch.actions.shape}, "
          f"returns-to-go {batch.returns_to_go.shape}, {batch.mask.mean():.0%} real steps (rest padding)")
    print(f"   CMT fragment pairs: 2 x {first.observations.shape}, same episode per row: "
          f"{bool(np.all(first.episode_ids == second.episode_ids))}")
    if train_steps:
        _train_tour(work, seed, train_steps)
    print(f"done in {time.perf_counter() - t0:.1f} s. Next: `seqrl train dt --dataset hopper-medium` "
          f"(the paper's 100k updates), `seqrl data info {path}`, or `tensorboard --logdir {work}`")
    return info


def _train_tour(work: Path, seed: int, train_steps: int) -> None:
    from seqrl.data.minari_io import minari_root_at
    from seqrl.data.recipes import make
    from seqrl.envs.registry import make_env
    from seqrl.policy import Policy, cpu_has_bf16_kernels
    from seqrl.train import train

    data_file = work / "hopper-medium-small.hdf5"
    print("5. making a 50,000-step hopper-medium dataset from the shipped behaviour policy")
    with minari_root_at(work / "minari"):
        make("hopper-medium", steps=50_000, seed=seed, fmt="d4rl", out=str(data_file), force=True,
             progress=False)
    quick = ["warmup_steps=100"]  # the paper warms up over 10k updates; this run has only a few hundred
    # CMT: both stages, with a small relabel pool and a short prompt tuning; bf16 autocast only where
    # the CPU has bf16 instructions (elsewhere it is about 10x slower than fp32)
    cmt_quick = quick + [f"bf16={str(cpu_has_bf16_kernels()).lower()}",
                         f"improve_steps={max(1, train_steps // 5)}", "relabel_states=256"]
    runs = {}
    for algo, overrides in (("dt", quick), ("bc", []), ("cmt", cmt_quick)):
        out = work / f"{algo}-hopper-medium-small"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        summary = train(algo, str(data_file), steps=train_steps, seed=seed, out=out, eval_every=0,
                        eval_episodes=10, overrides=overrides, log_every=50, checkpoint_every=train_steps)
        ev = summary["eval"]
        runs[algo] = out
        ups = summary.get("representation", summary)["train_updates_per_s"]
        print(f"   {algo}: {train_steps} updates at {ups:.1f} updates/s, "
              f"return {ev['return_mean']:.0f} +- {ev['return_std']:.0f}, normalised "
              f"{ev['normalized_score_mean']:.1f} (dataset: "
              f"{_dataset_score(data_file):.1f}); run directory {out}")
        if algo == "cmt":
            before = summary["eval_without_prompt_tuning"]
            print(f"        CMT before prompt tuning: normalised {before['normalized_score_mean']:.1f}; "
                  f"{summary['planned_states']} states relabelled by beam search "
                  f"({summary['plan_ms_per_state']:.0f} ms each), then {summary['steps']} adaptor updates")
    policy = Policy.load(runs["dt"])
    env = make_env("hopper")
    obs, _ = env.reset(seed=seed)
    policy.reset(target_return=3600)
    total, reward, steps = 0.0, 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs, reward))
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    env.close()
    print(f"6. Policy.load('{runs['dt']}') then reset/act in a plain gymnasium loop: return {total:.0f} "
          f"in {steps} steps")


def _dataset_score(path: Path) -> float:
    from seqrl.data.sources import dataset_info, load_source

    return dataset_info(load_source(str(path)))["normalized_return_mean"]


def _check_same(a, b, what: str) -> None:
    for key in ("observations", "actions", "rewards", "terminations", "truncations", "offsets"):
        if not np.array_equal(getattr(a, key), getattr(b, key)):
            raise AssertionError(f"{what}: '{key}' changed in the round trip")
