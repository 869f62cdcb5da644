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
          stage: str | None = None, from_dir: str | Path | None = None,
          wandb_project: str | None = None, eval_workers: int = 1) -> dict:
    """Train ``algo`` ("dt", "bc", "cmt", ...) on ``dataset`` (a SOURCE, see seqrl.data.sources) and
    return the summary also written to ``<out>/summary.json``. ``overrides`` are ``key=value`` settings
    of the algorithm's config (``--set``). For CMT, ``stage`` ("representation" or "improvement") runs
    one stage; the improvement stage starts from the representation stage in ``from_dir`` (default:
    ``out``). ``wandb_project`` also logs the metrics to Weights & Biases. ``eval_workers`` shares each
    evaluation's episodes out to that many processes (single-task datasets)."""
    from seqrl.algos import get_algorithm
    from seqrl.algos.base import apply_overrides, check_settings
    from seqrl.data.sources import load_source, reference_for
    from seqrl.envs.registry import check_spaces, env_name
    from seqrl.envs.scores import DEFAULT_TARGET_RETURNS
    from seqrl.train.trainer import RunConfig, Trainer, require_wandb, seed_everything

    algo_cls = get_algorithm(algo)
    # check --set before any data is loaded or made (with the meta-RL variants' extra keys)
    check_settings(apply_overrides(_meta_config(algo, algo_cls)(), list(overrides)))
    if (stage is not None or from_dir is not None) and algo != "cmt":
        raise ConfigError("--stage and --from are for cmt, which trains in two stages")
    if from_dir is not None and stage != "improvement":
        raise ConfigError("--from names the representation stage to start from: it is for --stage "
                          "improvement")
    if out is not None and (str(out) == "" or Path(out).exists() and not Path(out).is_dir()):
        raise ConfigError(f"--out must name a run directory, got '{out}'"
                          + (" (an existing file)" if str(out) else ""))
    if stage not in (None, "representation", "improvement"):
        raise ConfigError(f"--stage must be representation or improvement, got '{stage}'")
    if steps < 1:
        raise ConfigError(f"--steps must be positive, got {steps}")
    if wandb_project is not None:
        require_wandb()
    if eval_workers < 1:
        raise ConfigError(f"--eval-workers must be positive, got {eval_workers}")
    data = load_source(dataset, env=env, make_missing=True)  # the loaders reject NaN/inf
    multi_task = data.episode_tasks is not None
    if multi_task and eval_workers > 1:
        raise ConfigError("--eval-workers is for single-task datasets (meta-RL evaluation runs in one "
                          "process)")
    if multi_task and algo not in META_ALGOS:
        raise ConfigError(f"'{dataset}' is a multi-task (meta-RL) dataset: train one of "
                          f"{', '.join(META_ALGOS)} on it")
    if algo in META_ONLY and not multi_task:
        raise ConfigError(f"{algo} is a meta-RL algorithm: it needs a multi-task dataset such as "
                          f"point-robot or cheetah-vel (see `seqrl data list`)")
    config = apply_overrides((_meta_config(algo, algo_cls) if multi_task else algo_cls.Config)(),
                             list(overrides))
    family = part = None
    if multi_task:
        from seqrl.algos.meta import training_part

        part, family = training_part(data)
        user_keys = {o.partition("=")[0].strip() for o in overrides}
        if hasattr(config, "return_scale") and "return_scale" not in user_keys:
            config.return_scale = family.return_scale  # returns-to-go in the family's units
    env_id = data.env_id
    if env_id is not None:
        check_spaces(env_id, data.obs_dim, data.act_dim, "dataset")
    elif eval_episodes > 0:
        raise ConfigError(f"dataset '{dataset}' does not name its environment: pass --env (e.g. "
                          f"--env hopper), or --eval-episodes 0 to train without evaluation")
    if target_returns:
        targets = [float(t) for t in target_returns]
    elif multi_task:  # no reference scores for task families: the best return in the training data
        targets = [round(float(part.episode_returns.max()), 2)]
    else:
        targets = list(DEFAULT_TARGET_RETURNS.get(env_name(env_id), ())) if env_id else []
        if not targets and eval_episodes > 0 and getattr(config, "condition_on_returns", False):
            raise ConfigError(f"no default target return for {env_id}: pass --target-return R")
    ref = reference_for(data)
    run = RunConfig(algo=algo, dataset=dataset, env_id=env_id, steps=steps, seed=seed,
                    dataset_sha256=dataset_sha256(data),
                    eval_every=eval_every, eval_episodes=eval_episodes, target_returns=targets,
                    reference_returns=list(ref) if ref else None, log_every=log_every,
                    checkpoint_every=checkpoint_every, device=device, wandb_project=wandb_project,
                    eval_workers=eval_workers)
    if out is None:
        out = from_dir if (stage == "improvement" and from_dir is not None) else \
            default_run_dir(algo, dataset, seed)
    out = Path(out)
    if algo == "cmt":
        from seqrl.algos.cmt import train_cmt

        return train_cmt(config, data, run, out, resume=resume, progress=progress, stage=stage,
                         from_dir=Path(from_dir) if from_dir is not None else None)
    seed_everything(seed)
    if multi_task:
        from seqrl.algos.dt_meta import MultiTaskDT, PromptDT, held_out_demonstrations

        if algo == "prompt-dt":
            demos = held_out_demonstrations(data, family, config.prompt_top_fraction)
            algorithm = PromptDT(config, part, family, seed=seed, device=device, context_data=demos)
        else:
            algorithm = MultiTaskDT(config, part, family, seed=seed, device=device)
    else:
        algorithm = algo_cls(config, data, seed=seed, device=device)
    return Trainer(algorithm, run, out, resume=resume, progress=progress).fit()


META_ALGOS = ("cmt", "dt", "prompt-dt")   # what trains on a multi-task dataset
META_ONLY = ("prompt-dt",)                # what needs one


def dataset_sha256(data) -> str:
    """The data's content hash: the one stored with a made dataset, else computed from its arrays."""
    from seqrl.data.recipes import content_hash

    return data.metadata.get("seqrl_content_sha256") or content_hash(data)


def trained_on_other_data(run_record: dict, sha256: str | None) -> bool:
    """True when a run's stored settings (``config["run"]``) name other dataset contents than ``sha256``;
    runs from before the hash was recorded count as the same data."""
    stored = run_record.get("dataset_sha256")
    return stored is not None and stored != sha256


def _meta_config(algo: str, algo_cls):
    """The config class ``algo`` uses on a multi-task dataset."""
    if algo == "cmt":
        from seqrl.algos.cmt_meta import MetaCMTConfig

        return MetaCMTConfig
    if algo == "dt":
        from seqrl.algos.dt_meta import MetaDTConfig

        return MetaDTConfig
    return algo_cls.Config
