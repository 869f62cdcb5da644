"""``train``: from a dataset SOURCE and an algorithm name to a finished run directory (what
``seqrl train ALGO`` calls)."""

from __future__ import annotations

import re
from pathlib import Path

from seqrl.errors import ConfigError


def default_run_dir(algo: str, source: str, seed: int) -> Path:
    stem = Path(source).stem if source.endswith((".hdf5", ".h5")) else source
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem.removeprefix("minari:")).strip("_")
    return Path("runs") / f"{algo}-{stem}-s{seed}"


def train(algo: str, dataset: str, env: str | None = None, steps: int = 100_000, seed: int = 0,
          out: str | Path | None = None, eval_every: int = 10_000, eval_episodes: int = 10,
          target_returns=None, overrides=(), resume: bool = False, progress: bool = True,
          device: str = "cpu", log_every: int = 100, checkpoint_every: int = 5_000,
          stage: str | None = None, from_dir: str | Path | None = None) -> dict:
    """Train ``algo`` ("dt", "bc", "cmt", ...) on ``dataset`` (a SOURCE, see seqrl.data.sources) and
    return the summary also written to ``<out>/summary.json``. ``overrides`` are ``key=value`` settings
    of the algorithm's config (``--set``). For CMT, ``stage`` ("representation" or "improvement") runs
    one stage; the improvement stage starts from the representation stage in ``from_dir`` (default:
    ``out``)."""
    from seqrl.algos import get_algorithm
    from seqrl.algos.base import apply_overrides
    from seqrl.data.sources import load_source, reference_for
    from seqrl.envs.registry import check_spaces, env_name
    from seqrl.envs.scores import DEFAULT_TARGET_RETURNS
    from seqrl.train.trainer import RunConfig, Trainer, seed_everything

    algo_cls = get_algorithm(algo)
    if algo == "cmt":  # check --set before any data is loaded or made (meta-RL CMT's keys included)
        from seqrl.algos.cmt_meta import MetaCMTConfig

        apply_overrides(MetaCMTConfig(), list(overrides))
    else:
        apply_overrides(algo_cls.Config(), list(overrides))
    if (stage is not None or from_dir is not None) and algo != "cmt":
        raise ConfigError("--stage and --from are for cmt, which trains in two stages")
    if stage not in (None, "representation", "improvement"):
        raise ConfigError(f"--stage must be representation or improvement, got '{stage}'")
    if steps < 1:
        raise ConfigError(f"--steps must be positive, got {steps}")
    data = load_source(dataset, env=env, make_missing=True)  # the loaders reject NaN/inf
    config_cls = algo_cls.Config
    if data.episode_tasks is not None:
        if algo != "cmt":
            raise ConfigError(f"'{dataset}' is a multi-task (meta-RL) dataset: train cmt on it")
        from seqrl.algos.cmt_meta import MetaCMTConfig

        config_cls = MetaCMTConfig
    config = apply_overrides(config_cls(), list(overrides))
    env_id = data.env_id
    if env_id is not None:
        check_spaces(env_id, data.obs_dim, data.act_dim, "dataset")
    elif eval_episodes > 0:
        raise ConfigError(f"dataset '{dataset}' does not name its environment: pass --env (e.g. "
                          f"--env hopper), or --eval-episodes 0 to train without evaluation")
    if target_returns:
        targets = [float(t) for t in target_returns]
    else:
        targets = list(DEFAULT_TARGET_RETURNS.get(env_name(env_id), ())) if env_id else []
        if not targets and eval_episodes > 0 and getattr(config, "condition_on_returns", False):
            raise ConfigError(f"no default target return for {env_id}: pass --target-return R")
    ref = reference_for(data)
    run = RunConfig(algo=algo, dataset=dataset, env_id=env_id, steps=steps, seed=seed,
                    eval_every=eval_every, eval_episodes=eval_episodes, target_returns=targets,
                    reference_returns=list(ref) if ref else None, log_every=log_every,
                    checkpoint_every=checkpoint_every, device=device)
    if out is None:
        out = from_dir if (stage == "improvement" and from_dir is not None) else \
            default_run_dir(algo, dataset, seed)
    out = Path(out)
    if algo == "cmt":
        from seqrl.algos.cmt import train_cmt

        return train_cmt(config, data, run, out, resume=resume, progress=progress, stage=stage,
                         from_dir=Path(from_dir) if from_dir is not None else None)
    seed_everything(seed)
    algorithm = algo_cls(config, data, seed=seed, device=device)
    return Trainer(algorithm, run, out, resume=resume, progress=progress).fit()
