import json

import minari
import numpy as np
import pytest

from seqrl.cli import main
from seqrl.data import recipes
from seqrl.data.minari_io import minari_dataset_exists
from seqrl.data.recipes import content_hash, generate, make, recipe_parts
from seqrl.data.sources import load_source
from seqrl.errors import ConfigError
from seqrl.policies.actor import Actor, load_actor, save_actor


def random_actor(obs_dim, act_dim, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    w = lambda o, i: (rng.standard_normal((o, i)) * scale).astype(np.float32)
    z = lambda o: np.zeros(o, np.float32)
    return Actor(hidden=[(w(32, obs_dim), z(32)), (w(32, 32), z(32))], mu=(w(act_dim, 32), z(act_dim)),
                 log_std=(w(act_dim, 32), z(act_dim) - 1.0), action_low=-np.ones(act_dim, np.float32),
                 action_high=np.ones(act_dim, np.float32), metadata={"env_id": "Hopper-v5"})


@pytest.fixture
def policy_root(tmp_path, monkeypatch):
    root = tmp_path / "policies"
    (root / "hopper").mkdir(parents=True)
    names = [f"actor_{i}.safetensors" for i in range(4)]
    for i, name in enumerate(names):
        save_actor(random_actor(11, 3, i), root / "hopper" / name)
    (root / "hopper" / "manifest.json").write_text(json.dumps(
        {"env_id": "Hopper-v5", "random": names[0], "medium": names[2], "expert": names[3],
         "replay": names[:3]}))
    monkeypatch.setenv("SEQRL_POLICY_ROOT", str(root))
    return root


def test_actor_round_trip_and_bounds(tmp_path):
    actor = random_actor(11, 3, 0)
    actor.action_low = np.array([-1, -2, 0], np.float32)
    actor.action_high = np.array([1, 2, 0.5], np.float32)
    save_actor(actor, tmp_path / "a.safetensors")
    back = load_actor(tmp_path / "a.safetensors")
    obs = np.random.default_rng(0).standard_normal((100, 11)).astype(np.float32)
    np.testing.assert_array_equal(back.act(obs, deterministic=True), actor.act(obs, deterministic=True))
    acts = back.act(obs, np.random.default_rng(1))
    assert np.all(acts >= back.action_low) and np.all(acts <= back.action_high)
    assert back.metadata["env_id"] == "Hopper-v5"


def test_sbx_actor_export_matches_flax_layers(tmp_path):
    """An SBX SAC model's flax actor (Dense kernels stored (in, out), call order = name order) exported
    to seqrl's layout acts exactly as the flax network it came from. The model is a stand-in with SBX's
    attribute layout; the real export was checked against SBX's own predict (docs/datasets.md)."""
    from types import SimpleNamespace

    import gymnasium as gym

    from seqrl.policies.actor import save_sbx_actor

    rng = np.random.default_rng(0)
    sizes = [(11, 64), (64, 64), (64, 3), (64, 3)]   # two ReLU layers, mean head, log-std head
    params = {f"Dense_{i}": {"kernel": rng.standard_normal(s).astype(np.float32) * 0.2,
                             "bias": rng.standard_normal(s[1]).astype(np.float32) * 0.1}
              for i, s in enumerate(sizes)}
    model = SimpleNamespace(policy=SimpleNamespace(actor_state=SimpleNamespace(params={"params": params})),
                            action_space=gym.spaces.Box(-2.0, 2.0, (3,), np.float32))
    save_sbx_actor(model, tmp_path / "a.safetensors", "Hopper-v5", {"train_step": 7})
    actor = load_actor(tmp_path / "a.safetensors")

    obs = rng.standard_normal((50, 11)).astype(np.float32)
    h = obs
    for i in range(2):
        h = np.maximum(h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"], 0.0)
    mean = h @ params["Dense_2"]["kernel"] + params["Dense_2"]["bias"]
    log_std = np.clip(h @ params["Dense_3"]["kernel"] + params["Dense_3"]["bias"], -20, 2)
    mu, std = actor.distribution(obs)
    np.testing.assert_allclose(mu, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std, np.exp(log_std), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actor.act(obs, deterministic=True), 2.0 * np.tanh(mean), rtol=1e-5, atol=1e-5)
    assert actor.metadata["train_step"] == 7 and actor.metadata["env_id"] == "Hopper-v5"


def test_recipe_parts():
    manifest = {"random": "r", "medium": "m", "expert": "e", "replay": ["s0", "s1", "s2"]}
    assert [(p.policy, p.steps) for p in recipe_parts("hopper", "medium", None, manifest)] == [("m", 1_000_000)]
    replay = recipe_parts("hopper", "medium-replay", None, manifest)
    assert [p.policy for p in replay] == ["s0", "s1", "s2"] and sum(p.steps for p in replay) == 402_000
    assert [p.steps for p in recipe_parts("hopper", "medium-replay", 100, manifest)] == [34, 33, 33]
    me = recipe_parts("walker2d", "medium-expert", 101, manifest)
    assert [(p.policy, p.steps) for p in me] == [("m", 50), ("e", 51)]
    with pytest.raises(ConfigError):
        recipe_parts("hopper", "medium-replay", 2, manifest)


def test_make_small_dataset_into_the_minari_root(policy_root, capsys):
    assert main(["data", "make", "hopper-medium", "--steps", "600", "--num-envs", "4"]) == 0
    assert minari_dataset_exists("seqrl/hopper/medium-v0")
    loaded = minari.load_dataset("seqrl/hopper/medium-v0")  # as a Minari user would
    assert loaded.total_steps == 600
    assert loaded.storage.metadata["ref_min_score"] == -20.272305
    capsys.readouterr()
    assert main(["data", "info", "hopper-medium", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["steps"] == 600 and info["normalized_return_mean"] is not None
    ds = load_source("hopper-medium")
    assert ds.metadata["seqrl_content_sha256"] == content_hash(ds)
    assert ds.metadata["seqrl_policies"] == [{"file": "actor_2.safetensors", "steps": 600}]
    # made once: a second make needs --force
    assert main(["data", "make", "hopper-medium", "--steps", "600"]) == 2
    assert main(["data", "list"]) == 0
    assert "yes, 600 steps" in capsys.readouterr().out


def test_same_seed_gives_identical_arrays(policy_root):
    a = generate("hopper-medium-replay", steps=450, seed=3, num_envs=4, progress=False)
    b = generate("hopper-medium-replay", steps=450, seed=3, num_envs=4, progress=False)
    c = generate("hopper-medium-replay", steps=450, seed=4, num_envs=4, progress=False)
    assert a.metadata["seqrl_content_sha256"] == b.metadata["seqrl_content_sha256"]
    assert a.metadata["seqrl_content_sha256"] != c.metadata["seqrl_content_sha256"]
    assert a.num_steps == 450 and len(a.metadata["seqrl_policies"]) == 3


def test_medium_expert_is_medium_then_expert(policy_root):
    ds = generate("hopper-medium-expert", steps=400, seed=0, num_envs=2, progress=False)
    assert [p["file"] for p in ds.metadata["seqrl_policies"]] == ["actor_2.safetensors", "actor_3.safetensors"]
    assert ds.num_steps == 400
    # the medium half is the medium recipe of the same seed and size, step for step
    medium = generate("hopper-medium", steps=200, seed=0, num_envs=2, progress=False)
    np.testing.assert_array_equal(ds.observations[:200], medium.observations)
    np.testing.assert_array_equal(ds.actions[:200], medium.actions)


def test_interrupted_make_registers_nothing_and_next_make_starts_clean(policy_root, monkeypatch,
                                                                      isolated_minari_root):
    calls = {"n": 0}
    real_collect = __import__("seqrl.data.collect", fromlist=["collect"]).collect

    def dying_collect(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # die in the middle of a multi-part recipe
            raise KeyboardInterrupt
        return real_collect(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr("seqrl.data.collect.collect", dying_collect)
        with pytest.raises(KeyboardInterrupt):
            make("hopper-medium-replay", steps=300, num_envs=2, progress=False)
    assert not minari_dataset_exists("seqrl/hopper/medium-replay-v0")
    (isolated_minari_root / ".seqrl-tmp-leftover").mkdir(parents=True)  # as a killed process leaves it
    make("hopper-medium-replay", steps=300, num_envs=2, progress=False)
    assert not list(isolated_minari_root.glob(".seqrl-tmp-*"))
    assert load_source("hopper-medium-replay").num_steps == 300


def test_d4rl_format_and_make_on_first_use(policy_root, tmp_path, capsys):
    out = tmp_path / "hm.hdf5"
    assert main(["data", "make", "hopper-random", "--steps", "200", "--format", "d4rl", "--out", str(out)]) == 0
    assert load_source(str(out)).num_steps == 200
    with pytest.MonkeyPatch.context() as patch:  # the full 1M-step recipe is too big for a test
        patch.setitem(recipes.FULL_STEPS, "expert", 150)
        ds = load_source("hopper-expert", make_missing=True)
    assert ds.num_steps == 150
    assert "making it now" in capsys.readouterr().err


def test_missing_policies_give_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQRL_POLICY_ROOT", str(tmp_path / "empty"))
    assert main(["data", "make", "ant-medium", "--steps", "10"]) == 2
    assert capsys.readouterr().err.startswith("error: no behaviour policies for 'ant'")


def test_missing_expert_gives_one_line_error(policy_root, capsys):
    manifest = json.loads((policy_root / "hopper" / "manifest.json").read_text())
    manifest["expert"] = None
    (policy_root / "hopper" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["data", "make", "hopper-medium-expert", "--steps", "10"]) == 2
    assert capsys.readouterr().err.startswith("error: no expert behaviour policy ships for 'hopper' yet")


@pytest.mark.parametrize("env", ["hopper", "halfcheetah", "walker2d", "ant"])
def test_shipped_actors_match_their_manifest_and_environment(env):
    """Every actor a shipped manifest names exists, loads, and fits the environment's spaces."""
    from seqrl.data.recipes import default_policy_root
    from seqrl.envs.registry import gym_id, make_env

    root = default_policy_root() / env
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["env_id"] == gym_id(env)
    e = make_env(env)
    obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
    names = {manifest["random"], manifest["medium"], *manifest["replay"]} | (
        {manifest["expert"]} if manifest.get("expert") else set())
    assert manifest["replay"][0] == manifest["random"] and manifest["replay"][-1] == manifest["medium"]
    for name in sorted(names):
        actor = load_actor(root / name)
        action = actor.act(np.zeros((2, obs_dim), np.float32), np.random.default_rng(0))
        assert action.shape == (2, act_dim)
        assert np.all(action >= e.action_space.low) and np.all(action <= e.action_space.high)
