"""``seqrl viz prompts``: a map of CMT's policy prompts (the paper's Fig. 4).

Two fragments of each of many episodes are encoded by the run's trajectory encoder; the prompts are
flattened, L2-normalised (the geometry InfoNCE shapes) and projected to 2-D by PCA; points are coloured by
their episode's return. Next to the picture, two numbers say what the eye sees:
  * ``pair_nn_rate``: how often a fragment's nearest other prompt (cosine, in the full prompt space)
    is the other fragment of the same episode (chance: 1 / (2 * episodes - 1));
  * ``return_r2``: the R^2 of a linear fit of episode return from the 2-D projection.
With ``compare`` (e.g. a run trained with ``contrastive_coef`` near 0) both maps are drawn side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seqrl.errors import ConfigError


def _load(run: str | Path):
    from seqrl.data.sources import load_source
    from seqrl.policy import Policy
    from seqrl.train.checkpoint import load_checkpoint

    state = load_checkpoint(run)
    if state["policy"].get("model_class") != "CMT":
        raise ConfigError(f"'{run}' is not a CMT run (it holds a {state['policy'].get('algo')} policy)")
    policy = Policy.load(run)
    cfg = state["config"]
    dataset = load_source(cfg["run"]["dataset"], env=cfg["run"].get("env_id"))
    return policy, dataset, cfg


@torch.no_grad()
def prompt_map(run: str | Path, episodes: int = 300, seed: int = 0) -> dict:
    """Prompts of two fragments per episode, their PCA projection and the two scores."""
    from seqrl.data.sampler import SegmentSampler

    policy, dataset, cfg = _load(run)
    model = policy.model
    n = min(episodes, dataset.num_episodes)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(dataset.num_episodes, size=n, replace=False))
    sampler = SegmentSampler(dataset, context_len=model.fragment_len, obs_mean=policy.obs_mean.numpy(),
                             obs_std=policy.obs_std.numpy(), seed=seed)
    ep = np.repeat(chosen, 2)
    batch = sampler.fragments(ep, model.fragment_len, rng).to_torch()
    rewards = torch.where(batch["mask"], model.normalize_reward(batch["rewards"]), 0.0)
    z = model.encode(batch["observations"], batch["actions"], rewards, batch["mask"])
    flat = torch.nn.functional.normalize(z.flatten(1), dim=1).numpy()
    centred = flat - flat.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    returns = dataset.episode_returns[ep]
    sims = flat @ flat.T
    np.fill_diagonal(sims, -np.inf)
    partner = np.arange(len(ep)) ^ 1            # fragments 2i and 2i+1 share an episode
    pair_nn = float(np.mean(sims.argmax(1) == partner))
    design = np.column_stack([xy, np.ones(len(xy))])
    coef, *_ = np.linalg.lstsq(design, returns, rcond=None)
    resid = returns - design @ coef
    r2 = float(1 - resid.var() / max(returns.var(), 1e-12))
    return {"run": str(run), "episodes": n, "xy": xy, "returns": returns, "pair_nn_rate": pair_nn,
            "pair_nn_chance": 1.0 / (len(ep) - 1), "return_r2": r2,
            "contrastive_coef": cfg["algo"].get("contrastive_coef"), "dataset": cfg["run"]["dataset"]}


def plot_prompts(runs: list[str | Path], out: str | Path, episodes: int = 300, seed: int = 0) -> list[dict]:
    """Draw one panel per run into the PNG ``out``; returns the maps' scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = [prompt_map(r, episodes, seed) for r in runs]
    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 5.0), squeeze=False,
                             layout="constrained")
    vmin = min(m["returns"].min() for m in maps)
    vmax = max(m["returns"].max() for m in maps)
    for ax, m in zip(axes[0], maps):
        points = ax.scatter(m["xy"][:, 0], m["xy"][:, 1], c=m["returns"], cmap="viridis", s=9,
                            vmin=vmin, vmax=vmax)
        ax.set_title(f"{Path(m['run']).name}: contrastive coef {m['contrastive_coef']:g}\n"
                     f"pair NN {m['pair_nn_rate']:.2f} (chance {m['pair_nn_chance']:.3f}), "
                     f"return R2 {m['return_r2']:.2f}", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.colorbar(points, ax=axes[0].tolist(), label="episode return")
    fig.suptitle(f"CMT policy prompts, {maps[0]['dataset']} ({maps[0]['episodes']} episodes, 2 "
                 f"fragments each, PCA of normalised prompts)", fontsize=10)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    scores = [{k: m[k] for k in ("run", "episodes", "contrastive_coef", "pair_nn_rate", "pair_nn_chance",
                                 "return_r2")} for m in maps]
    out.with_suffix(".json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores
