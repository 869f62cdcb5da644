import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def isolated_minari_root(tmp_path, monkeypatch):
    """Every test gets its own empty Minari root, so nothing touches the user's datasets."""
    root = tmp_path / "minari-root"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def make_dataset(lengths, obs_dim=3, act_dim=2, seed=0, ends=None, next_obs=True):
    """A small TrajectoryDataset with the given episode lengths; ``ends`` gives each episode's end
    kind: 'terminal', 'timeout' or 'none' (default: alternate terminal/timeout)."""
    from seqrl.data.trajectories import TrajectoryDataset

    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    term = np.zeros(n, dtype=bool)
    trunc = np.zeros(n, dtype=bool)
    pos = 0
    for i, length in enumerate(lengths):
        kind = ends[i] if ends else ("terminal" if i % 2 == 0 else "timeout")
        pos += length
        if kind == "terminal":
            term[pos - 1] = True
        elif kind == "timeout":
            trunc[pos - 1] = True
    observations = rng.standard_normal((n, obs_dim)).astype(np.float32)
    # as in real data: the next observation is the following row inside an episode
    next_observations = np.concatenate([observations[1:], rng.standard_normal((1, obs_dim))]).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    next_observations[ends] = rng.standard_normal((len(lengths), obs_dim))
    return TrajectoryDataset(
        observations=observations,
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminations=term, truncations=trunc,
        next_observations=next_observations if next_obs else None,
        name="test")


@pytest.fixture
def point_policies(tmp_path, monkeypatch):
    """Privileged point-robot behaviour actors (observation 2 + task vector 2), random weights."""
    import json

    from seqrl.policies.actor import save_actor
    from tests.test_recipes import random_actor

    root = tmp_path / "policies"
    (root / "point-robot").mkdir(parents=True)
    names = [f"actor_{i}.safetensors" for i in range(3)]
    for i, name in enumerate(names):
        save_actor(random_actor(4, 2, i, scale=1.0), root / "point-robot" / name)
    (root / "point-robot" / "manifest.json").write_text(json.dumps(
        {"env_id": "seqrl/PointRobot-v0", "random": names[0], "medium": names[1], "expert": names[2],
         "replay": names[:2]}))
    monkeypatch.setenv("SEQRL_POLICY_ROOT", str(root))
    return root
