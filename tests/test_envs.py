import numpy as np
import pytest

from seqrl.envs import (ENVIRONMENTS, env_name, env_spaces, gym_id, make_env, make_vec_env,
                        normalized_score, reference_returns)
from seqrl.errors import UnknownNameError


def test_names_and_ids():
    assert gym_id("hopper") == "Hopper-v5"
    assert gym_id("Walker2d-v5") == "Walker2d-v5"
    assert env_name("HalfCheetah-v5") == "halfcheetah" and env_name("hopper-medium-v2") == "hopper"
    with pytest.raises(UnknownNameError, match="unknown environment 'rocket'"):
        gym_id("rocket")


@pytest.mark.parametrize("name,dims", [("hopper", (11, 3)), ("halfcheetah", (17, 6)),
                                       ("walker2d", (17, 6)), ("ant", (105, 8))])
def test_all_registered_environments_build(name, dims):
    assert name in ENVIRONMENTS
    assert env_spaces(name) == dims


def test_d4rl_reference_scores():
    assert reference_returns("hopper") == (-20.272305, 3234.3)
    assert reference_returns("HalfCheetah-v5") == (-280.178953, 12135.0)
    assert reference_returns("walker2d") == (1.629008, 4592.3)
    assert reference_returns("ant") == (-325.6, 3879.7)
    lo, hi = reference_returns("hopper")
    assert normalized_score(hi, lo, hi) == pytest.approx(100.0)
    assert normalized_score(lo, lo, hi) == pytest.approx(0.0)
    np.testing.assert_allclose(normalized_score([lo, hi], lo, hi), [0.0, 100.0])


def test_seeding_is_deterministic():
    def rollout(seed):
        env = make_env("hopper", seed=seed)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(10):
            obs, *_ = env.step(env.action_space.sample())
            out.append(obs)
        return np.array(out)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_vector_env_copies_are_seeded_apart():
    vec = make_vec_env("hopper", 3, seed=5)
    obs, _ = vec.reset(seed=5)
    assert obs.shape == (3, 11)
    assert not np.array_equal(obs[0], obs[1])
    vec.close()


def test_a_repeated_mujoco_warning_is_printed_once(capsys):
    import mujoco

    from seqrl.envs import registry

    registry.quiet_repeated_mujoco_warnings()
    assert mujoco.get_mju_user_warning() is not None
    registry._MUJOCO_WARNINGS_SEEN.discard("test warning")
    for _ in range(3):
        registry._print_once("test warning")
    assert capsys.readouterr().err.count("test warning") == 1
