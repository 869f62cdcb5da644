"""Trained policies for your own loops: ``Policy.load(run_dir)``, then ``reset`` and ``act``.

    policy = Policy.load("runs/dt-hopper-medium")        # or a checkpoint file; no dataset needed
    policy.reset(target_return=3600)
    obs, _ = env.reset(seed=0)
    reward = 0.0
    while True:
        action = policy.act(obs, reward)                    # reward: what the previous action earned
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break

``act`` also takes a batch of observations (num_envs, obs_dim) after ``reset(num_envs=N)``; the
evaluator uses exactly this path, dropping finished episodes with ``select``.

Decision Transformer context. The model was trained on windows of K steps. The reference
implementations recompute the last K steps at every environment step. Here the window's keys and values
are cached, so each step feeds only its new tokens; when the window is full it is cut back to its last
``eval_keep`` steps, which are re-encoded once (prefill), and then grows again. Every action is exactly
what the full forward over its window gives (tests/test_policy.py). With ``eval_keep = K - 1`` this is
the reference behaviour (context always the last K steps, a prefill every step); the default K // 2 sees
between K/2 and K steps, which are all contexts the model meets in training, at about twice the cost of
pure incremental decoding. docs/training.md compares both on the same checkpoints.

CMT acts the same way, with its prompt L(z) in front of the window and reward tokens instead of
returns-to-go; the prompt is recomputed at each re-encoding (seqrl.algos.cmt explains its sources).
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch

from seqrl.errors import ConfigError
from seqrl.models import CMT, DecisionTransformer, MLPPolicy
from seqrl.train.checkpoint import load_checkpoint

MODEL_CLASSES = {"DecisionTransformer": DecisionTransformer, "MLPPolicy": MLPPolicy, "CMT": CMT}
# eval_precision: bf16 casts the weights and the context buffers to bfloat16; observation
# normalisation, the return bookkeeping and attention over the KV cache stay in fp32. Cheaper acting on
# CPUs with bf16 matrix units; actions differ from fp32 ones by bf16 rounding (docs/training.md)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


def eval_dtype(precision: str | None) -> torch.dtype:
    """The torch dtype of an ``eval_precision`` setting (None: fp32); a ConfigError for others."""
    if (precision or "fp32") not in PRECISIONS:
        raise ConfigError(f"eval_precision must be one of {tuple(PRECISIONS)}, got '{precision}'")
    return PRECISIONS[precision or "fp32"]


def cpu_has_bf16_kernels() -> bool:
    """Whether this CPU runs bf16 matrix products natively (oneDNN's bf16 path needs AVX-512 BW/VL/DQ,
    AVX-NE-CONVERT or AMX); True where torch cannot tell."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def warn_if_bf16_is_slow(device, what: str, cost: str) -> None:
    """Warn that ``what`` (a bf16 setting) is slower than fp32 on this device: a CPU without bf16
    instructions (measured there: ``cost``)."""
    if torch.device(device).type == "cpu" and not cpu_has_bf16_kernels():
        warnings.warn(f"{what} on a CPU without bf16 instructions: {cost} on an AVX2 AMD EPYC; "
                      "use fp32", stacklevel=3)


def build_model(spec: dict) -> torch.nn.Module:
    return MODEL_CLASSES[spec["model_class"]](**spec["model_kwargs"])


class Policy:
    """A model plus what acting needs: observation normalisation, return scale, target return."""

    def __init__(self, model: torch.nn.Module, spec: dict, device="cpu"):
        self.dtype = eval_dtype(spec.get("eval_precision"))
        if self.dtype == torch.bfloat16:
            warn_if_bf16_is_slow(device, "eval_precision=bf16", "rollouts are 3x slower than fp32")
        if self.dtype != torch.float32:  # a cast copy: the caller's model (the trainer's) stays as it is
            model = copy.deepcopy(model).to(self.dtype)
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = torch.device(device)
        self.env_id = spec.get("env_id")
        self.obs_mean = torch.as_tensor(spec["obs_mean"], dtype=torch.float32, device=device)
        self.obs_std = torch.as_tensor(spec["obs_std"], dtype=torch.float32, device=device)
        self.return_scale = float(spec.get("return_scale", 1.0))
        self.default_target_return = spec.get("target_return")
        self.is_cmt = isinstance(model, CMT)
        self.is_prompt_dt = isinstance(model, DecisionTransformer) and model.prompt_len > 0  # Prompt-DT
        self.is_sequence_model = isinstance(model, (DecisionTransformer, CMT))
        self.prompt_source = spec.get("prompt_source", "stored")
        if self.prompt_source not in ("stored", "history"):
            raise ConfigError(f"prompt_source must be stored or history, got '{self.prompt_source}'")
        if self.is_sequence_model:
            k = model.context_len
            keep = spec.get("eval_keep")
            keep = k // 2 if keep is None else int(keep)
            if not 0 <= keep < k:
                raise ConfigError(f"eval_keep must be between 0 and context_len - 1 = {k - 1}, got {keep}")
            self.keep = keep
        self.policy_prompt = spec.get("policy_prompt", "stored")
        if self.policy_prompt not in ("stored", "context"):
            raise ConfigError(f"policy_prompt must be stored or context, got '{self.policy_prompt}'")
        if self.policy_prompt == "context" and not (self.is_cmt and model.has_task_prompt):
            raise ConfigError("policy_prompt=context is for two-prompt meta-RL CMT runs (task_encoder=true)")
        self.num_envs = 0
        self._context_z = None
        self._context_policy_z = None

    @classmethod
    def load(cls, run_dir_or_checkpoint: str | os.PathLike, device="cpu", **overrides) -> "Policy":
        """Load from a run directory (its last checkpoint) or a checkpoint file. ``overrides`` change
        spec entries such as ``eval_keep``."""
        state = load_checkpoint(run_dir_or_checkpoint, map_location=device)
        spec = {**state["policy"], **overrides}
        model = build_model(spec)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ConfigError(f"checkpoint weights do not fit its model: {str(exc).splitlines()[0]}") \
                from None
        return cls(model, spec, device)

    # ------------------------------------------------------------------------------ episodes
    def reset(self, target_return: float | None = None, num_envs: int = 1) -> None:
        """Start new episodes in ``num_envs`` environments, aiming at ``target_return`` (sequence models;
        default: the one the run was trained to evaluate with)."""
        self.num_envs = num_envs
        if not self.is_sequence_model:
            return
        if target_return is None:
            target_return = self.default_target_return
        if target_return is None and self.model.condition_on_returns:
            raise ConfigError("this policy conditions on returns: give reset(target_return=...)")
        m, k, dev = self.model, self.model.context_len, self.device
        dt = self.dtype
        self._states = torch.zeros(num_envs, k, m.obs_dim, device=dev, dtype=dt)
        self._actions = torch.zeros(num_envs, k, m.act_dim, device=dev, dtype=dt)
        self._rtg = torch.zeros(num_envs, k, device=dev, dtype=dt)
        self._rewards = torch.zeros(num_envs, k, device=dev, dtype=dt)
        self._timesteps = torch.zeros(num_envs, k, dtype=torch.long, device=dev)
        self._return_left = torch.full((num_envs,), float(target_return or 0.0), device=dev)
        self._window = 0   # steps in the current context window
        self._t = 0        # episode timestep
        self._prompt = None
        self._context_z = None
        self._context_policy_z = None
        if self.is_prompt_dt:  # no demonstration yet: an empty (all-padding) prompt
            p = m.prompt_len
            self._dt_prompt = {"observations": torch.zeros(num_envs, p, m.obs_dim, device=dev, dtype=dt),
                               "actions": torch.zeros(num_envs, p, m.act_dim, device=dev, dtype=dt),
                               "returns_to_go": torch.zeros(num_envs, p, device=dev, dtype=dt),
                               "timesteps": torch.zeros(num_envs, p, dtype=torch.long, device=dev),
                               "mask": torch.zeros(num_envs, p, dtype=torch.bool, device=dev)}
        self._cache = m.generator.new_cache(num_envs, device=dev) if self.is_cmt else \
            m.new_cache(num_envs, device=dev)

    def select(self, rows) -> None:
        """Keep only the environments ``rows`` (bool mask or indices), e.g. those still running."""
        rows = torch.as_tensor(np.asarray(rows), device=self.device)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().squeeze(1)
        self.num_envs = len(rows)
        if self.is_sequence_model:
            for name in ("_states", "_actions", "_rtg", "_rewards", "_timesteps", "_return_left"):
                setattr(self, name, getattr(self, name)[rows])
            self._cache.select(rows)
            if self.is_cmt and getattr(self, "_prompt", None) is not None:
                self._prompt = self._prompt[rows]
            if self._context_z is not None:
                self._context_z = self._context_z[rows]
            if self._context_policy_z is not None:
                self._context_policy_z = self._context_policy_z[rows]
            if self.is_prompt_dt:
                self._dt_prompt = {k: v[rows] for k, v in self._dt_prompt.items()}

    @torch.no_grad()
    def set_context(self, states, actions, rewards, mask=None, returns_to_go=None, timesteps=None
                    ) -> None:
        """Context trajectories of the task, one per environment (arrays (N, L, ...) in environment
        units, ``mask`` (N, L) False on padding), for the current episodes; call after reset().
        CMT encodes them into its prompts (meta-RL: a trajectory of the same task, Section 4.2).
        Prompt-DT uses them as its trajectory prompt (L = its prompt_len) and also needs the steps'
        ``returns_to_go`` within their episode (environment units) and episode ``timesteps``."""
        if not (self.is_cmt or self.is_prompt_dt):
            raise ConfigError("only CMT and Prompt-DT policies take a context trajectory")
        m, dev = self.model, self.device
        states = torch.as_tensor(np.asarray(states, np.float32), device=dev)
        if states.shape[0] != self.num_envs:
            raise ConfigError(f"set_context got {states.shape[0]} contexts for {self.num_envs} environments")
        actions = torch.as_tensor(np.asarray(actions, np.float32), device=dev)
        rewards = torch.as_tensor(np.asarray(rewards, np.float32), device=dev)
        mask = (torch.ones(states.shape[:2], dtype=torch.bool, device=dev) if mask is None
                else torch.as_tensor(np.asarray(mask, bool), device=dev))
        states = torch.where(mask[..., None], (states - self.obs_mean) / self.obs_std, 0.0)
        actions = torch.where(mask[..., None], actions, 0.0)
        if self.is_prompt_dt:
            if states.shape[1] != m.prompt_len:
                raise ConfigError(f"this Prompt-DT policy takes prompts of {m.prompt_len} steps, "
                                  f"got {states.shape[1]}")
            if m.condition_on_returns and returns_to_go is None:
                raise ConfigError("a Prompt-DT prompt needs its returns_to_go")
            rtg = (torch.zeros(states.shape[:2], device=dev) if returns_to_go is None else
                   torch.as_tensor(np.asarray(returns_to_go, np.float32), device=dev) / self.return_scale)
            steps = (torch.zeros(states.shape[:2], dtype=torch.long, device=dev) if timesteps is None
                     else torch.as_tensor(np.asarray(timesteps), dtype=torch.long, device=dev))
            self._dt_prompt = {"observations": states.to(self.dtype), "actions": actions.to(self.dtype),
                               "returns_to_go": torch.where(mask, rtg, 0.0).to(self.dtype),
                               "timesteps": torch.where(mask, steps, 0), "mask": mask}
            return
        rewards = torch.where(mask, m.normalize_reward(rewards), 0.0)
        dt = self.dtype
        # with two prompts (meta-RL, task_encoder) the context gives the task prompt, and the policy
        # prompt too when policy_prompt is "context"
        encode = m.encode_task if m.has_task_prompt else m.encode
        self._context_z = encode(states.to(dt), actions.to(dt), rewards.to(dt), mask)
        if self.policy_prompt == "context":
            self._context_policy_z = m.encode(states.to(dt), actions.to(dt), rewards.to(dt), mask)

    @torch.no_grad()
    def act(self, obs, reward=0.0) -> np.ndarray:
        """The action for observation(s) ``obs``; ``reward`` is what the previous action earned (ignored
        at an episode's first step). Deterministic."""
        if self.num_envs == 0:
            raise ConfigError("call reset() before act()")
        obs_t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
        single = obs_t.dim() == 1
        obs_t = obs_t.reshape(-1, obs_t.shape[-1])
        if obs_t.shape[0] != self.num_envs:
            raise ConfigError(f"act got {obs_t.shape[0]} observations for {self.num_envs} environments")
        obs_t = (obs_t - self.obs_mean) / self.obs_std
        if self.is_sequence_model:
            action = self._act_sequence(obs_t, reward)
        else:
            action = self.model(obs_t.to(self.dtype))
        action = action.float().cpu().numpy()
        return action[0] if single else action

    def _act_sequence(self, obs_t: torch.Tensor, reward) -> torch.Tensor:
        m, k = self.model, self.model.context_len
        if self._t > 0:  # DT: the return still to collect drops by the reward just received
            reward_t = torch.as_tensor(np.asarray(reward, dtype=np.float32), device=self.device)
            self._return_left -= reward_t.reshape(-1)
            if self.is_cmt:  # CMT: the previous step's reward token
                self._rewards[:, self._window - 1] = m.normalize_reward(reward_t.reshape(-1))
        prefill = self._window == 0
        if self._window == k:  # full: keep the last `keep` steps and re-encode them (see module doc)
            keep = self.keep
            for buf in (self._states, self._actions, self._rtg, self._rewards, self._timesteps):
                buf[:, :keep] = buf[:, k - keep:].clone()
            self._window, prefill = keep, True
        w = self._window
        self._states[:, w] = obs_t
        self._actions[:, w] = 0.0
        self._rtg[:, w] = self._return_left / self.return_scale
        self._timesteps[:, w] = self._t
        if prefill:
            self._cache.clear()
            lo = 0
        else:
            lo = w - 1
        if self.is_cmt:
            if prefill:
                self._prompt = self._cmt_prompt(w)
            action, _ = m.generator.decode(self._cache, self._prompt, self._states[:, lo:w + 1],
                                           self._actions[:, lo:w + 1], self._rewards[:, lo:w + 1],
                                           self._timesteps[:, lo:w + 1])
            self._actions[:, w] = action
            self._window, self._t = w + 1, self._t + 1
            return action
        action = m.decode(self._cache, self._states[:, lo:w + 1], self._actions[:, lo:w + 1],
                          self._rtg[:, lo:w + 1], self._timesteps[:, lo:w + 1],
                          prompt=self._dt_prompt if self.is_prompt_dt and prefill else None)
        self._actions[:, w] = action
        self._window, self._t = w + 1, self._t + 1
        return action

    def _cmt_prompt(self, history: int) -> torch.Tensor:
        """CMT's prompt through the adaptor, L(z): z is the stored prompt, or with prompt_source
        "history" the encoding of the ``history`` steps before the current one (when there are any).
        With two prompts, [L(z), t]: z the stored policy prompt (policy_prompt "context": the context's
        own, A_e of the context fragment, once there is a context) and t the task prompt of the context,
        else of the history (prompt_source "history"), else the stored task prompt."""
        m = self.model
        # what the context or history is read into: the task prompt (two prompts) or the prompt
        encode, stored = (m.encode_task, m.stored_task_prompt) if m.has_task_prompt else \
            (m.encode, m.stored_prompt)
        if self._context_z is not None:
            read = self._context_z
        elif self.prompt_source == "history" and history > 0:
            mask = torch.ones(self.num_envs, history, dtype=torch.bool, device=self.device)
            read = encode(self._states[:, :history], self._actions[:, :history],
                          self._rewards[:, :history], mask)
        else:
            read = stored.expand(self.num_envs, -1, -1)
        if m.has_task_prompt:  # the policy prompt (stored, or the context's) goes in front of the task prompt
            z = (self._context_policy_z if self._context_policy_z is not None
                 else m.stored_prompt.expand(self.num_envs, -1, -1))
            read = torch.cat([z, read], dim=1)
        return m.tuned(read)
