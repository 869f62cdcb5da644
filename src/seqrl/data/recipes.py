"""D4RL-style dataset recipes, generated offline from behaviour policies that ship with seqrl.

Each environment has a folder ``seqrl/policies/<env>/`` with SAC actor snapshots (safetensors) and a
``manifest.json`` naming the ``random`` (untrained), ``medium`` and ``expert`` actors and the ``replay``
series of snapshots from random up to medium. The recipes follow D4RL (Fu et al., 2020, Sec. 5):

  random         1M steps of the randomly initialised actor
  medium         1M steps of the medium actor (about a third of the expert's return)
  expert         1M steps of the expert actor
  medium-replay  the snapshots' experience up to medium, in equal shares (sized like D4RL's)
  medium-expert  medium + expert, 2M steps

Actions are sampled from the actors' squashed Gaussians, as D4RL's were. Episodes end at 1000 steps
(truncation) or on a fall (termination). ``steps`` scales a recipe down for tests and quick runs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqrl.data.trajectories import TrajectoryDataset
from seqrl.errors import ConfigError, DatasetError

FULL_STEPS = {"random": 1_000_000, "medium": 1_000_000, "expert": 1_000_000,
              "medium-expert": 2_000_000}
# D4RL's medium-replay sizes (v2 datasets).
MEDIUM_REPLAY_STEPS = {"hopper": 402_000, "halfcheetah": 202_000, "walker2d": 302_000, "ant": 302_000}


def default_policy_root() -> Path:
    """The shipped policies, or the folder in SEQRL_POLICY_ROOT (to try new actors before shipping)."""
    import os

    override = os.environ.get("SEQRL_POLICY_ROOT")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "policies"


@dataclass
class Part:
    """One block of a recipe: ``steps`` steps of the actor in ``policy`` (a file name)."""
    policy: str
    steps: int


def load_manifest(env: str, policy_root: Path | None = None) -> dict:
    root = Path(policy_root or default_policy_root()) / env
    path = root / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"no behaviour policies for '{env}' in {root} (the maintainers have not "
                           f"trained them yet; see docs/datasets.md)")
    manifest = json.loads(path.read_text())
    manifest["_root"] = str(root)
    return manifest


def recipe_parts(env: str, kind: str, steps: int | None, manifest: dict) -> list[Part]:
    """The blocks a recipe is made of; ``steps`` (total) scales them down proportionally."""
    if kind == "medium-replay":
        total = steps or MEDIUM_REPLAY_STEPS[env]
        snapshots = manifest["replay"]
        if total < len(snapshots):
            raise ConfigError(f"{env}-medium-replay needs at least {len(snapshots)} steps "
                              f"(one per snapshot), got {total}")
        shares = np.full(len(snapshots), total // len(snapshots))
        shares[: total % len(snapshots)] += 1
        return [Part(p, int(n)) for p, n in zip(snapshots, shares)]
    if kind == "medium-expert":
        total = steps or FULL_STEPS[kind]
        if total < 2:
            raise ConfigError(f"{env}-medium-expert needs at least 2 steps, got {total}")
        return [Part(_policy(manifest, env, "medium"), total // 2),
                Part(_policy(manifest, env, "expert"), total - total // 2)]
    if kind in ("random", "medium", "expert"):
        return [Part(_policy(manifest, env, kind), steps or FULL_STEPS[kind])]
    raise ConfigError(f"unknown dataset kind '{kind}'")


def _policy(manifest: dict, env: str, kind: str) -> str:
    if not manifest.get(kind):
        raise DatasetError(f"no {kind} behaviour policy ships for '{env}' yet, so {env}-{kind} recipes "
                           f"cannot be made (see docs/datasets.md)")
    return manifest[kind]


def content_hash(dataset: TrajectoryDataset) -> str:
    """sha256 over the step arrays and offsets: equal hashes mean byte-identical datasets."""
    h = hashlib.sha256()
    for arr in (dataset.observations, dataset.actions, dataset.rewards, dataset.terminations,
                dataset.truncations, dataset.offsets, dataset.next_observations, dataset.episode_tasks):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def generate(name: str, steps: int | None = None, seed: int = 0, num_envs: int = 16,
             policy_root: Path | None = None, progress: bool = True) -> TrajectoryDataset:
    """Build the dataset of a recipe in memory (not written anywhere)."""
    from tqdm import tqdm

    from seqrl.data.collect import collect
    from seqrl.data.sources import split_name
    from seqrl.data.meta_recipes import generate_meta, split_meta_name
    from seqrl.envs.scores import D4RL_REFERENCE_RETURNS
    from seqrl.policies.actor import load_actor

    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be positive, got {steps}")
    if split_meta_name(name):
        return generate_meta(name, steps=steps, seed=seed, num_envs=num_envs, policy_root=policy_root,
                             progress=progress)
    env, kind = split_name(name)
    manifest = load_manifest(env, policy_root)
    parts = recipe_parts(env, kind, steps, manifest)
    total = sum(p.steps for p in parts)
    blocks = []
    with tqdm(total=total, unit="step", desc=f"making {name}", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        for index, part in enumerate(parts):
            actor = load_actor(Path(manifest["_root"]) / part.policy)
            # Every block has its own seeds, derived from the dataset seed and its position.
            block_seed = seed * 1_000_003 + index * 10_007
            rng = np.random.default_rng(block_seed)
            blocks.append(collect(env, lambda obs, a=actor, r=rng: a.act(obs, r), part.steps,
                                  num_envs=num_envs, seed=block_seed, progress=bar.update,
                                  name=f"{name}[{part.policy}]"))
    dataset = blocks[0] if len(blocks) == 1 else TrajectoryDataset.concatenate(blocks)
    dataset.name = name
    ref_min, ref_max = D4RL_REFERENCE_RETURNS[env]
    dataset.metadata = {
        "ref_min_score": ref_min, "ref_max_score": ref_max,
        "seqrl_recipe": name, "seqrl_steps": total, "seqrl_seed": seed,
        "seqrl_policies": [{"file": p.policy, "steps": p.steps} for p in parts],
        "seqrl_content_sha256": content_hash(dataset),
    }
    return dataset


def make(name: str, steps: int | None = None, seed: int = 0, fmt: str = "minari", out: str | None = None,
         force: bool = False, num_envs: int = 16, policy_root: Path | None = None,
         progress: bool = True) -> str:
    """Generate a recipe and write it atomically; returns the Minari id or file path written.

    Default output: the Minari dataset ``seqrl/<env>/<kind>-v0`` in the Minari root, which is where
    ``load_source(name)`` looks. Temporary folders left by an interrupted earlier make are removed first.
    """
    from seqrl.data.d4rl import save_d4rl
    from seqrl.data.meta_recipes import split_meta_name
    from seqrl.data.minari_io import check_id, clean_stale_temporaries, minari_dataset_exists, save_minari
    from seqrl.data.sources import minari_id_for

    if fmt not in ("minari", "d4rl"):
        raise ConfigError(f"unknown format '{fmt}' (choose minari or d4rl)")
    if fmt == "d4rl" and split_meta_name(name):
        raise ConfigError(f"{name} is a multi-task dataset: it is written in Minari format only "
                          f"(the D4RL layout has no place for episode tasks)")
    if fmt == "minari":
        target = out or minari_id_for(name)
        check_id(target)                     # before generating, not after
        clean_stale_temporaries()
        if minari_dataset_exists(target) and not force:
            raise DatasetError(f"Minari dataset '{target}' is already made (use --force to make it again)")
    else:
        target = out or f"{name}.hdf5"
        if Path(target).exists() and not force:
            raise DatasetError(f"{target} already exists (use --force to make it again)")
    dataset = generate(name, steps=steps, seed=seed, num_envs=num_envs, policy_root=policy_root,
                       progress=progress)
    if fmt == "minari":
        save_minari(dataset, target, overwrite=force, algorithm_name="seqrl behaviour SAC",
                    description=f"seqrl recipe {name}: D4RL-style data from shipped SAC actors",
                    extra_metadata={k: v for k, v in dataset.metadata.items() if k.startswith("seqrl_")})
    else:
        save_d4rl(dataset, target, overwrite=force)
    return str(target)
