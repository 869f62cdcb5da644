"""Contextual Meta Transformer for offline RL (CMT, seeds/000, Section 4.1, Eq. 2-4, Fig. 1).

Two stages, each a run of the shared trainer:

1. Representation (``CMTRepresentation``). Per batch row, one episode gives a generator window of K
   steps (placed as DT's windows) and two encoder fragments of L steps placed independently in the same
   episode. The prompt z = A_e(fragment 1) is the generator's prefix (the adaptor is the identity here)
   and the generator reconstructs the window:
       L1 = D(a, pi) + c_r D(r, R) + c_s D(s', P) + c_v (V - G)^2                       (Eq. 2)
   with D the MSE (deterministic heads) or Gaussian NLL (stochastic), rewards and the discounted
   returns G normalised by the dataset's statistics. The InfoNCE loss of Eq. 3 pulls together the
   prompts of the two fragments of one episode and pushes apart those of other episodes in the batch:
       L = L1 + gamma L2.
2. Improvement (``CMTImprovement``). A_e and A_g are frozen. A fixed pool of dataset states is
   relabelled by beam search with A_g as the world model (seqrl.planner; each state planned once, on
   first use, and kept in the checkpoint), and only the adaptor L(z; xi) is trained:
       L3 = D(a_hat_t, pi(s_t, tau_<t; L(z))) + beta ||z - L(z)||^2                     (Eq. 4)
   where D is the MSE and ||.||^2 is taken as a mean square too: averaged over the prompt's entries
   (P vectors of H dims) and rows. The encoder ends in a LayerNorm, so z's entries have unit scale and
   the constraint is the relative change of the prompt, whatever P and H are; the squared norm summed
   over H = 128 dims, as first written, weighed it 128 times more and the adaptor hardly moved. The planner uses the frozen prompt z of the episode (not L(z)), so a relabel
   does not depend on how far the adaptor has trained.

Acting needs no planning (the paper's point about cost): the generator acts from a prompt through the
adaptor. ``prompt_source`` chooses the prompt:
  * "stored" (default, used by the tables): the mean prompt of fragments of the best episodes of the
    dataset (``prompt_top_fraction``), computed at the end of the representation stage and kept in the
    checkpoint;
  * "history": the encoder reads the episode's own recent steps (the context window) whenever the
    window is re-encoded; the first steps of an episode use the stored prompt.

Ablation switches (Q1-Q3): ``prompt_tuning=false`` skips the improvement stage; ``contrastive_coef``
is gamma; ``behaviour_coef`` is beta.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from seqrl.algos.base import Algorithm, OptimConfig
from seqrl.data.sampler import SegmentSampler
from seqrl.errors import ConfigError
from seqrl.models.cmt import CMT, head_loss, info_nce
from seqrl.planner import beam_search, candidate_noise

PROMPT_SOURCES = ("stored", "history")
STORED_PROMPTS = ("mean", "medoid")
# settings that change the improvement stage only (an ablation over them can reuse a representation stage)
IMPROVEMENT_ONLY_SETTINGS = frozenset({
    "prompt_tuning", "improve_steps", "improve_learning_rate", "improve_warmup_steps",
    "behaviour_coef", "relabel_states", "plan_horizon", "beam_width", "plan_candidates", "plan_noise",
    "plan_batch", "prompt_source", "eval_keep", "eval_precision", "stored_prompt_rule"})


def improvement_only(settings) -> bool:
    """True when every ``key=value`` in ``settings`` changes the improvement stage only."""
    return all(s.partition("=")[0].strip() in IMPROVEMENT_ONLY_SETTINGS for s in settings)


@dataclass
class CMTConfig(OptimConfig):
    # ---- representation stage (the OptimConfig fields above apply to it)
    warmup_steps: int = 10_000
    """linear warm-up of the representation stage (DT's 10k)"""
    context_len: int = 20
    """K: steps per generator window and the longest context at evaluation"""
    fragment_len: int = 20
    """L: steps per encoder fragment"""
    prompt_len: int = 4
    """P: prompt vectors (learned query tokens of the encoder)"""
    embed_dim: int = 128
    """width of encoder, generator and prompt vectors"""
    num_layers: int = 3
    """generator blocks"""
    num_heads: int = 1
    """generator attention heads"""
    encoder_layers: int = 2
    """encoder blocks (bidirectional)"""
    encoder_heads: int = 1
    """encoder attention heads"""
    dropout: float = 0.1
    """dropout in encoder and generator"""
    activation: str = "relu"
    """MLP activation: relu or gelu"""
    max_timestep: int = 1000
    """largest episode timestep with its own embedding"""
    stochastic: bool = False
    """Gaussian heads trained by negative log-likelihood instead of deterministic heads with MSE"""
    contrastive_coef: float = 0.1
    """gamma: weight of the InfoNCE loss (Eq. 3); the paper's Q2 tries 1e-6 and 1"""
    temperature: float = 0.1
    """alpha: InfoNCE temperature"""
    reward_coef: float = 1.0
    """weight of the reward prediction loss"""
    state_coef: float = 1.0
    """weight of the next-state prediction loss"""
    value_coef: float = 1.0
    """weight of the value loss"""
    discount: float = 0.99
    """discount of the value targets and of the planner's ranking"""
    # ---- acting
    prompt_source: str = "stored"
    """stored (mean prompt of the best episodes) or history (the episode's own recent steps)"""
    prompt_top_fraction: float = 0.05
    """the stored prompt averages fragments of this fraction of best episodes (at most 64)"""
    stored_prompt_rule: str = "mean"
    """how the best fragments' prompts become the stored prompt: "mean" (their average) or "medoid"
    (the one nearest the average, a prompt the generator saw in training; benchmarks/meta_prompts.py)"""
    eval_keep: int | None = None
    """steps kept when the evaluation window is full (None: K // 2), as DT"""
    eval_precision: str = "fp32"
    """fp32 or bf16: precision of evaluation rollouts, as DT"""
    # ---- improvement stage
    prompt_tuning: bool = True
    """False: skip the improvement stage (Q1's ablation)"""
    improve_steps: int = 2000
    """adaptor updates"""
    improve_learning_rate: float = 3e-4
    """adaptor learning rate"""
    improve_warmup_steps: int = 100
    """adaptor learning-rate warm-up"""
    behaviour_coef: float = 1.0
    """beta: weight of the behaviour constraint ||z - L(z)||^2 (Eq. 4); Q3 tries 0 and 50"""
    adaptor_hidden: int = 256
    """hidden width of the adaptor MLP"""
    relabel_states: int = 4096
    """size of the pool of dataset states relabelled by the planner"""
    plan_horizon: int = 5
    """beam-search depth"""
    beam_width: int = 8
    """beams kept per depth"""
    plan_candidates: int = 8
    """actions proposed per beam and depth"""
    plan_noise: float = 0.2
    """candidate standard deviation around a deterministic action head"""
    plan_batch: int = 64
    """states planned per batched search"""

    def check(self) -> None:
        if self.prompt_source not in PROMPT_SOURCES:
            raise ConfigError(f"prompt_source must be one of {PROMPT_SOURCES}, got '{self.prompt_source}'")
        if self.stored_prompt_rule not in STORED_PROMPTS:
            raise ConfigError(f"stored_prompt_rule must be one of {STORED_PROMPTS}, got '{self.stored_prompt_rule}'")


def model_kwargs(config: CMTConfig, obs_dim: int, act_dim: int) -> dict:
    return dict(obs_dim=obs_dim, act_dim=act_dim, context_len=config.context_len,
                fragment_len=config.fragment_len, prompt_len=config.prompt_len,
                embed_dim=config.embed_dim, num_layers=config.num_layers, num_heads=config.num_heads,
                encoder_layers=config.encoder_layers, encoder_heads=config.encoder_heads,
                dropout=config.dropout, max_timestep=config.max_timestep,
                stochastic=config.stochastic, activation=config.activation,
                adaptor_hidden=config.adaptor_hidden)


class _CMTBase(Algorithm):
    """What both stages share: the sampler, statistics, fragments and the stored prompt."""

    name = "cmt"
    Config = CMTConfig

    def __init__(self, config: CMTConfig, dataset, seed: int = 0, device="cpu", dropout=None):
        super().__init__(config, dataset, seed, device)
        config.check()
        # DT-style windows; returns-to-go here are the discounted returns the value head learns
        self.sampler = SegmentSampler(dataset, context_len=config.context_len,
                                      batch_size=config.batch_size, return_scale=1.0,
                                      gamma=config.discount, seed=seed)
        self.model_kwargs = self.build_model_kwargs(model_kwargs(config, dataset.obs_dim, dataset.act_dim))
        if dropout is not None:
            self.model_kwargs["dropout"] = dropout
        self.model = CMT(**self.model_kwargs).to(self.device)
        self._set_statistics()

    def _set_statistics(self) -> None:
        m, ds = self.model, self.dataset
        values = self.sampler.rtg
        stats = {"reward_mean": ds.rewards.mean(), "reward_std": ds.rewards.std() + 1e-6,
                 "value_mean": values.mean(), "value_std": values.std() + 1e-6}
        for name, value in stats.items():
            getattr(m, name).fill_(float(value))

    def to_model_units(self, batch) -> dict:
        """A SegmentBatch as tensors with normalised rewards and values."""
        t = batch.to_torch(self.device)
        t["rewards"] = torch.where(t["mask"], self.model.normalize_reward(t["rewards"]), 0.0)
        t["values"] = (t["returns_to_go"] - self.model.value_mean) / self.model.value_std
        return t

    def build_model_kwargs(self, kwargs: dict) -> dict:
        """Hook for variants (meta-RL CMT adds the [SEP] token)."""
        return kwargs

    def fragments(self, episodes: np.ndarray) -> dict:
        """Encoder fragments of L steps, each placed uniformly where it fits in its episode."""
        return self.to_model_units(self.sampler.fragments(episodes, self.config.fragment_len))

    def prompt_fragments(self, episodes: np.ndarray) -> dict:
        """The fragments the generator's prompt is encoded from: here the window's own episode (meta-RL
        CMT draws another episode of the same task)."""
        return self.fragments(episodes)

    def encode(self, frag: dict) -> torch.Tensor:
        return self.model.encode(frag["observations"], frag["actions"], frag["rewards"], frag["mask"])

    def context_prompt(self, episodes: np.ndarray) -> torch.Tensor:
        """The prompt the generator reads for windows of ``episodes`` (before the adaptor)."""
        return self.encode(self.prompt_fragments(episodes))

    def spread_fragments(self, episodes: np.ndarray, per_episode: int = 4) -> dict:
        """``per_episode`` evenly spaced fragments of each of ``episodes`` (first to last)."""
        ds, length = self.dataset, self.config.fragment_len
        repeated = np.repeat(episodes, per_episode)
        lo, hi = ds.offsets[repeated], ds.offsets[repeated + 1]
        room = np.maximum(hi - lo - length, 0)
        place = np.tile(np.arange(per_episode) / max(per_episode - 1, 1), len(episodes))
        starts = lo + (room * place).astype(np.int64)
        return self.to_model_units(self.sampler.gather(repeated, starts, length))

    @torch.no_grad()
    def prepare_policy(self) -> None:
        """The stored prompt: over 4 evenly spaced fragments of each of the best episodes, the mean
        prompt or the medoid (``stored_prompt_rule``)."""
        m, ds, cfg = self.model, self.dataset, self.config
        was_training = m.training
        m.eval()
        count = int(np.clip(round(cfg.prompt_top_fraction * ds.num_episodes), 1, 64))
        best = np.argsort(-ds.episode_returns, kind="stable")[:count]
        m.stored_prompt.copy_(self.summarise_prompts(self.encode(self.spread_fragments(best))))
        m.train(was_training)

    def summarise_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        """One (P, D) prompt for (N, P, D) ``prompts``: their mean, or the medoid (the prompt nearest
        the mean, so a real one)."""
        mean = prompts.mean(0)
        if self.config.stored_prompt_rule == "mean":
            return mean
        return prompts[((prompts - mean) ** 2).flatten(1).sum(1).argmin()]

    def summary_extras(self) -> dict:
        return {"stage": self.stage}

    def policy_spec(self) -> dict:
        return {"model_class": "CMT", "model_kwargs": dict(self.model_kwargs),
                "obs_mean": self.sampler.obs_mean.tolist(), "obs_std": self.sampler.obs_std.tolist(),
                "eval_keep": self.config.eval_keep, "prompt_source": self.config.prompt_source,
                "eval_precision": self.config.eval_precision}


class CMTRepresentation(_CMTBase):
    """Stage 1: L = L1 + gamma L2 trains encoder and generator (the adaptor stays the identity)."""

    stage = "representation"
    metric_names = ("action_loss", "reward_loss", "state_loss", "value_loss", "infonce")

    def __init__(self, config: CMTConfig, dataset, seed: int = 0, device="cpu"):
        super().__init__(config, dataset, seed, device)
        self.model.adaptor.requires_grad_(False)

    def reconstruction_losses(self, z: torch.Tensor, w: dict) -> tuple:
        """Eq. 2 for the window ``w`` behind the prompt z: action, reward and next state of every real
        step (the next state must be in the window), and the value; returns the four losses."""
        out = self.model.generator(self.model.tuned(z), w["observations"], w["actions"], w["rewards"],
                                   w["timesteps"])
        mask = w["mask"]
        action_loss = head_loss(out["action_mean"], out["action_log_std"], w["actions"], mask)
        reward_loss = head_loss(out["reward_mean"], out["reward_log_std"], w["rewards"], mask)
        next_log_std = out["next_state_log_std"]
        state_loss = head_loss(out["next_state_mean"][:, :-1],
                               None if next_log_std is None else next_log_std[:, :-1],
                               w["observations"][:, 1:], mask[:, 1:])
        value_loss = ((out["value"] - w["values"]) ** 2)[mask].mean()
        return action_loss, reward_loss, state_loss, value_loss

    def loss(self):
        cfg = self.config
        window = self.sampler.sample()
        episodes = window.episode_ids
        w = self.to_model_units(window)
        z1 = self.encode(self.fragments(episodes))
        z2 = self.encode(self.fragments(episodes))
        action_loss, reward_loss, state_loss, value_loss = self.reconstruction_losses(z1, w)
        # Eq. 3: the two fragments of an episode are positives, other episodes' fragments negatives
        nce = info_nce(z1, z2, cfg.temperature, groups=torch.as_tensor(episodes, device=self.device))
        loss = (action_loss + cfg.reward_coef * reward_loss + cfg.state_coef * state_loss
                + cfg.value_coef * value_loss + cfg.contrastive_coef * nce)
        return loss, {"action_loss": action_loss.detach(), "reward_loss": reward_loss.detach(),
                      "state_loss": state_loss.detach(), "value_loss": value_loss.detach(),
                      "infonce": nce.detach()}


class CMTImprovement(_CMTBase):
    """Stage 2: frozen A_e and A_g; the adaptor learns the planner's relabelled actions (Eq. 4)."""

    stage = "improvement"
    metric_names = ("relabel_loss", "constraint", "planned_states")

    def __init__(self, config: CMTConfig, dataset, seed: int = 0, device="cpu",
                 pretrained: dict | None = None):
        # the frozen networks run without dropout; the trainer optimises the adaptor only
        super().__init__(config, dataset, seed, device, dropout=0.0)
        if pretrained is None:
            raise ConfigError("the improvement stage needs the representation stage's weights")
        try:
            self.model.load_state_dict(pretrained)
        except RuntimeError as exc:
            from seqrl.train.checkpoint import shape_mismatch

            raise ConfigError(f"representation checkpoint of another shape: {shape_mismatch(exc)}") \
                from None
        frozen = [self.model.encoder, self.model.generator, self.model.task_encoder]
        for part in filter(None, frozen):   # (a task encoder: meta-RL CMT with two prompts)
            part.requires_grad_(False)
        self.config = replace(config, learning_rate=config.improve_learning_rate,
                              warmup_steps=config.improve_warmup_steps)
        pool_rng = np.random.Generator(np.random.PCG64(seed + 7919))
        n = min(config.relabel_states, dataset.num_steps)
        self.pool = np.sort(pool_rng.choice(dataset.num_steps, size=n, replace=False))
        self.relabels = torch.zeros(n, dataset.act_dim)
        self.planned = torch.zeros(n, dtype=torch.bool)
        self.plan_seconds = 0.0

    def windows_ending_at(self, rows: np.ndarray):
        """The K-step windows whose last real step is ``rows`` (shorter at an episode's start) and
        that step's position in them."""
        episodes = self.dataset.episode_of_step[rows].astype(np.int64)
        starts = np.maximum(self.dataset.offsets[episodes], rows - self.config.context_len + 1)
        return episodes, starts, rows - starts

    @torch.no_grad()
    def plan(self, pool_indices: np.ndarray) -> None:
        """Relabel the pool states ``pool_indices`` by beam search, grouped by history length."""
        cfg, m = self.config, self.model
        tick = time.perf_counter()
        m.eval()
        rows = self.pool[pool_indices]
        episodes, starts, positions = self.windows_ending_at(rows)
        for length in np.unique(positions + 1):
            group = np.nonzero(positions + 1 == length)[0]
            for chunk in np.array_split(group, max(1, -(-len(group) // cfg.plan_batch))):
                w = self.to_model_units(self.sampler.gather(episodes[chunk], starts[chunk], int(length)))
                z = self.context_prompt(episodes[chunk])
                noise = candidate_noise(len(chunk), cfg.plan_horizon, cfg.plan_candidates, m.act_dim,
                                        device=self.device)
                actions, _ = beam_search(m, z, w["observations"], w["actions"], w["rewards"],
                                         w["timesteps"], horizon=cfg.plan_horizon,
                                         beam_width=cfg.beam_width, num_candidates=cfg.plan_candidates,
                                         noise_std=cfg.plan_noise, discount=cfg.discount, noise=noise)
                self.relabels[pool_indices[chunk]] = actions.float().cpu()
                self.planned[pool_indices[chunk]] = True
        self.plan_seconds += time.perf_counter() - tick

    def loss(self):
        cfg, m = self.config, self.model
        for part in filter(None, (m.encoder, m.generator, m.task_encoder)):
            part.eval()
        idx = self.sampler.rng.integers(0, len(self.pool), size=cfg.batch_size)
        todo = np.unique(idx[~self.planned[idx].numpy()])
        if len(todo):
            self.plan(todo)
        episodes, starts, positions = self.windows_ending_at(self.pool[idx])
        w = self.to_model_units(self.sampler.gather(episodes, starts, cfg.context_len))
        with torch.no_grad():
            z = self.context_prompt(episodes)
        tuned = m.tuned(z)
        out = m.generator(tuned, w["observations"], w["actions"], w["rewards"], w["timesteps"])
        pred = out["action_mean"][torch.arange(len(idx)), torch.as_tensor(positions)]
        target = self.relabels[idx].to(self.device)
        relabel_loss = ((pred - target) ** 2).mean()                            # D(a_hat, pi)
        # ||z - L(z)||^2, per entry (see above); of the policy prompt only when a task prompt follows it
        constraint = ((tuned - z)[:, :m.prompt_len] ** 2).mean()
        loss = relabel_loss + cfg.behaviour_coef * constraint
        return loss, {"relabel_loss": relabel_loss.detach(), "constraint": constraint.detach(),
                      "planned_states": torch.tensor(float(self.planned.sum()))}

    def summary_extras(self) -> dict:
        return {"stage": self.stage, "planned_states": int(self.planned.sum()),
                "plan_seconds": self.plan_seconds,
                "plan_ms_per_state": 1000 * self.plan_seconds / max(int(self.planned.sum()), 1)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "relabels": self.relabels.clone(),
                "planned": self.planned.clone(), "plan_seconds": self.plan_seconds}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.relabels.copy_(state["relabels"])
        self.planned.copy_(state["planned"])
        self.plan_seconds = float(state.get("plan_seconds", 0.0))


# ---------------------------------------------------------------------------------------- two stages
REPRESENTATION_DIR = "representation"


def representation_dir(run_dir: Path) -> Path:
    """Where a CMT run keeps its representation stage (a run directory of its own)."""
    return Path(run_dir) / REPRESENTATION_DIR


def find_representation(source: Path) -> Path:
    """``--from``: a CMT run directory, or a representation-stage run directory itself."""
    source = Path(source)
    for candidate in (representation_dir(source), source):
        summary = candidate / "summary.json"
        if summary.is_file() and json.loads(summary.read_text()).get("stage") == "representation":
            return candidate
    raise ConfigError(f"'{source}' holds no finished CMT representation stage (run `seqrl train cmt "
                      f"--stage representation` first)")


def train_cmt(config: CMTConfig, dataset, run, out: Path, resume: bool = False, progress: bool = True,
              stage: str | None = None, from_dir: Path | None = None) -> dict:
    """Both stages (or one, with ``stage``). The representation stage is a run directory of its own in
    ``out/representation``; the improvement stage is ``out`` itself, so ``Policy.load(out)`` and
    ``seqrl eval out`` use the tuned policy. ``out/summary.json`` holds ``eval`` (after prompt tuning)
    and ``eval_without_prompt_tuning`` (the representation stage's final evaluation)."""
    from seqrl.train.checkpoint import load_checkpoint
    from seqrl.train.trainer import Trainer, atomic_write_text, seed_everything

    representation_cls, improvement_cls, extra = CMTRepresentation, CMTImprovement, {}
    if dataset.episode_tasks is not None:  # a multi-task dataset: meta-RL CMT on its training tasks
        from seqrl.algos.cmt_meta import MetaCMTImprovement, MetaCMTRepresentation
        from seqrl.algos.meta import training_part

        dataset, family = training_part(dataset)
        representation_cls, improvement_cls, extra = MetaCMTRepresentation, MetaCMTImprovement, \
            {"family": family}
    if stage != "improvement":
        seed_everything(run.seed)
        rep = representation_cls(config, dataset, seed=run.seed, device=run.device, **extra)
        rep_summary = Trainer(rep, run, representation_dir(out), resume=resume, progress=progress).fit()
        if stage == "representation":
            return rep_summary
        rep_dir = representation_dir(out)
    else:
        rep_dir = find_representation(from_dir if from_dir is not None else out)
        rep_summary = json.loads((rep_dir / "summary.json").read_text())
        if rep_summary.get("dataset") not in (None, run.dataset):
            raise ConfigError(f"the representation stage in '{rep_dir}' was trained on "
                              f"'{rep_summary['dataset']}', not on '{run.dataset}'")
        from seqrl.train.api import trained_on_other_data

        if trained_on_other_data(rep_summary.get("config", {}).get("run", {}), run.dataset_sha256):
            raise ConfigError(f"the representation stage in '{rep_dir}' was trained on other contents of "
                              f"'{run.dataset}' than it holds now (remade, or another version)")
    if not config.prompt_tuning:  # Q1: the representation stage's policy is the result
        summary = {**rep_summary, "prompt_tuning": False,
                   "eval_without_prompt_tuning": rep_summary["eval"]}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
    pretrained = load_checkpoint(rep_dir, map_location=run.device)["model"]
    seed_everything(run.seed)
    improve = improvement_cls(config, dataset, seed=run.seed, device=run.device, pretrained=pretrained,
                              **extra)
    improve_run = replace(run, steps=config.improve_steps)
    summary = Trainer(improve, improve_run, out, resume=resume, progress=progress).fit()
    summary.update(prompt_tuning=True, eval_without_prompt_tuning=rep_summary["eval"],
                   representation={"run_dir": str(rep_dir), "steps": rep_summary["steps"],
                                   "train_updates_per_s": rep_summary["train_updates_per_s"],
                                   "elapsed_s": rep_summary["elapsed_s"]})
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
