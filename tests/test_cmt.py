"""CMT: InfoNCE by hand, beam search against brute force, cached acting against the full forward,
frozen networks in the improvement stage, and a tiny two-stage run through the CLI."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from seqrl.models.cmt import CMT, info_nce
from seqrl.planner import beam_search, candidate_noise
from seqrl.policy import Policy

from conftest import make_dataset


def _tiny_cmt(seed=0, stochastic=False, k=5, prompt_to_steps=False):
    torch.manual_seed(seed)
    model = CMT(3, 2, context_len=k, fragment_len=k, prompt_len=2, embed_dim=16, num_layers=2,
                num_heads=2, encoder_layers=1, dropout=0.0, stochastic=stochastic, adaptor_hidden=8,
                prompt_to_steps=prompt_to_steps)
    model.reward_mean.fill_(0.3)
    model.reward_std.fill_(2.0)
    model.value_mean.fill_(5.0)
    model.value_std.fill_(10.0)
    # scale the heads up so predictions differ visibly between candidates
    for head in (model.generator.reward_head.linear, model.generator.value_head,
                 model.generator.state_head.linear):
        head.weight.data.mul_(30.0)
    return model.eval()


# ---------------------------------------------------------------------------------------- InfoNCE
def test_info_nce_matches_a_hand_computed_case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    positives = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    alpha = 0.5

    def unit(v):
        n = math.hypot(*v)
        return [x / n for x in v]

    a = [unit(v) for v in anchors.tolist()]
    p = [unit(v) for v in positives.tolist()]
    expected = 0.0
    for i in range(3):
        sims = [sum(x * y for x, y in zip(a[i], p[j])) / alpha for j in range(3)]
        expected += -math.log(math.exp(sims[i]) / sum(math.exp(s) for s in sims))
    expected /= 3
    assert info_nce(anchors, positives, alpha).item() == pytest.approx(expected, rel=1e-6)
    # prompts of several vectors are flattened first
    assert info_nce(anchors.view(3, 2, 1), positives.view(3, 2, 1), alpha).item() == \
        pytest.approx(expected, rel=1e-6)


def test_info_nce_ignores_other_fragments_of_the_same_trajectory():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    positives = torch.tensor([[1.0, 0.2], [0.3, 1.0], [1.0, 0.0]])
    # rows 0 and 2 share a trajectory: for anchor 0 only row 1 is a negative (and vice versa)
    loss = info_nce(anchors, positives, 1.0, groups=torch.tensor([7, 8, 7]))
    a = torch.nn.functional.normalize(anchors, dim=1)
    p = torch.nn.functional.normalize(positives, dim=1)
    s = a @ p.T
    expected = (-torch.log_softmax(s[0, [0, 1]], 0)[0] - torch.log_softmax(s[1], 0)[1]
                - torch.log_softmax(s[2, [1, 2]], 0)[1]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------- planner
def _window(b=2, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(b, t, 3, generator=g)
    actions = torch.rand(b, t, 2, generator=g) * 2 - 1
    rewards = torch.randn(b, t, generator=g)
    timesteps = torch.arange(10, 10 + t).repeat(b, 1)
    prompt = torch.randn(b, 2, 16, generator=g)
    return prompt, states, actions, rewards, timesteps


def _brute_force(model, prompt, states, actions, rewards, timesteps, noise, horizon, noise_std,
                 discount):
    """Every candidate path, scored with full forward passes (no cache, no pruning)."""
    gen = model.generator
    best_actions, best_scores = [], []
    for b in range(states.shape[0]):
        n = noise.shape[2]
        best = (-math.inf, None)
        for path in itertools.product(range(n), repeat=horizon):
            S, A, R, T = (x[b:b + 1].clone() for x in (states, actions, rewards, timesteps))
            A[:, -1], R[:, -1] = 0.0, 0.0
            total, first = 0.0, None
            for depth, j in enumerate(path):
                out = gen(prompt[b:b + 1], S, A, R, T)
                sigma = noise_std if out["action_log_std"] is None else out["action_log_std"][0, -1].exp()
                a = (out["action_mean"][0, -1] + sigma * noise[b, depth, j]).clamp(-1, 1)
                first = a if first is None else first
                A[0, -1] = a
                r = gen(prompt[b:b + 1], S, A, R, T)["reward_mean"][0, -1]
                R[0, -1] = r
                s_next = gen(prompt[b:b + 1], S, A, R, T)["next_state_mean"][0, -1]
                total += discount ** depth * float(model.denormalize_reward(r))
                S = torch.cat([S, s_next.view(1, 1, -1)], 1)
                A = torch.cat([A, torch.zeros(1, 1, 2)], 1)
                R = torch.cat([R, torch.zeros(1, 1)], 1)
                T = torch.cat([T, T[:, -1:] + 1], 1)
            value = gen(prompt[b:b + 1], S, A, R, T)["value"][0, -1]
            total += discount ** horizon * float(model.denormalize_value(value))
            if total > best[0]:
                best = (total, first)
        best_scores.append(best[0])
        best_actions.append(best[1])
    return torch.stack(best_actions), torch.tensor(best_scores)


@pytest.mark.parametrize("stochastic, prompt_to_steps", [(False, False), (True, False), (False, True)])
@torch.no_grad()
def test_beam_search_without_pruning_equals_brute_force(stochastic, prompt_to_steps):
    model = _tiny_cmt(stochastic=stochastic, prompt_to_steps=prompt_to_steps)
    horizon, n = 3, 3
    window = _window()
    noise = candidate_noise(2, horizon, n, 2, torch.Generator().manual_seed(1))
    kwargs = dict(horizon=horizon, num_candidates=n, noise_std=0.5, discount=0.9, noise=noise)
    # beam width n^(horizon-1) keeps every partial path, so the search is exhaustive
    actions, scores = beam_search(model, *window, beam_width=n ** (horizon - 1), **kwargs)
    ref_actions, ref_scores = _brute_force(model, *window, noise, horizon, 0.5, 0.9)
    torch.testing.assert_close(actions, ref_actions, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, ref_scores.float(), atol=1e-4, rtol=1e-5)
    # a narrow beam can only do worse, and the cache changes nothing
    narrow, narrow_scores = beam_search(model, *window, beam_width=1, **kwargs)
    assert (narrow_scores <= scores + 1e-5).all()
    uncached, uncached_scores = beam_search(model, *window, beam_width=2, use_cache=False, **kwargs)
    cached, cached_scores = beam_search(model, *window, beam_width=2, **kwargs)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached_scores, uncached_scores, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------- acting
@pytest.mark.parametrize("source, prompt_to_steps", [("stored", False), ("history", False), ("history", True)])
def test_cmt_rollout_equals_the_full_forward_over_its_window(source, prompt_to_steps):
    k, keep, steps, n = 5, 2, 14, 2
    model = _tiny_cmt(k=k, prompt_to_steps=prompt_to_steps)
    model.stored_prompt.normal_()
    model.adaptor.mlp[2].weight.data.normal_(0, 0.1)  # a non-identity adaptor
    spec = {"obs_mean": [0.5] * 3, "obs_std": [2.0] * 3, "eval_keep": keep, "prompt_source": source}
    policy = Policy(model, spec)
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((steps, n, 3)).astype(np.float32)
    rewards = rng.standard_normal((steps, n)).astype(np.float32)
    policy.reset(num_envs=n)
    actions = np.stack([policy.act(obs[t], rewards[t - 1] if t else 0.0) for t in range(steps)])

    norm = (torch.from_numpy(obs) - 0.5) / 2.0
    r_norm = model.normalize_reward(torch.from_numpy(rewards))
    start, prompt = 0, None
    for t in range(steps):
        refresh = t == 0 or t - start == k
        if t - start == k:
            start = t - keep
        w = slice(start, t + 1)
        if refresh:
            with torch.no_grad():
                if source == "history" and t > 0:
                    h = slice(start, t)
                    z = model.encode(norm[h].transpose(0, 1), torch.from_numpy(actions[h]).transpose(0, 1),
                                     r_norm[h].T, torch.ones(n, t - start, dtype=torch.bool))
                else:
                    z = model.stored_prompt.expand(n, -1, -1)
                prompt = model.tuned(z)
        with torch.no_grad():
            full = model.generator(prompt, norm[w].transpose(0, 1),
                                   torch.from_numpy(actions[w]).transpose(0, 1), r_norm[w].T,
                                   torch.arange(start, t + 1).repeat(n, 1))
        np.testing.assert_allclose(actions[t], full["action_mean"][:, -1].numpy(), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------- stages
TINY = ["embed_dim=16", "num_layers=1", "encoder_layers=1", "context_len=5", "fragment_len=5",
        "prompt_len=2", "warmup_steps=5", "batch_size=8", "improve_steps=6", "relabel_states=24",
        "plan_horizon=2", "beam_width=2", "plan_candidates=3", "plan_batch=8", "adaptor_hidden=8"]


def _dataset():
    data = make_dataset([30, 25, 40, 12, 33], obs_dim=3, act_dim=2)
    return data


def test_improvement_trains_only_the_adaptor(tmp_path):
    from seqrl.algos.base import apply_overrides
    from seqrl.algos.cmt import CMTConfig, CMTImprovement, CMTRepresentation
    from seqrl.train.trainer import RunConfig, Trainer

    config = apply_overrides(CMTConfig(), TINY)
    data = _dataset()
    rep = CMTRepresentation(config, data, seed=0)
    run = RunConfig(algo="cmt", dataset="tiny", steps=10, eval_episodes=0, log_every=5)
    Trainer(rep, run, tmp_path / "rep", progress=False).fit()
    # the adaptor is still exactly the identity after the representation stage
    z = torch.randn(4, 2, 16)
    torch.testing.assert_close(rep.model.tuned(z), z, rtol=0, atol=0)

    improve = CMTImprovement(config, data, seed=0, pretrained=rep.model.state_dict())
    before = {k: v.clone() for k, v in improve.model.state_dict().items()}
    Trainer(improve, RunConfig(algo="cmt", dataset="tiny", steps=6, eval_episodes=0, log_every=3),
            tmp_path / "imp", progress=False).fit()
    after = improve.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("adaptor.") for k in changed), changed
    assert int(improve.planned.sum()) > 0
    # each planned state is planned once: its relabel is stored and never recomputed
    planned = improve.planned.clone()
    relabels = improve.relabels.clone()
    improve.loss()
    torch.testing.assert_close(improve.relabels[planned], relabels[planned], rtol=0, atol=0)


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory):
    from seqrl.data.recipes import make

    path = tmp_path_factory.mktemp("data") / "hopper_small.hdf5"
    make("hopper-medium", steps=800, seed=0, fmt="d4rl", out=str(path))
    return path


def test_train_cmt_cli_runs_both_stages_and_reports_both_scores(hopper_file, tmp_path, capsys):
    from seqrl.cli import main

    data = hopper_file
    out = tmp_path / "run"
    args = ["train", "cmt", "--dataset", str(data), "--steps", "8", "--eval-every", "0",
            "--eval-episodes", "2", "--out", str(out), "--log-every", "4", "--no-progress"]
    for setting in TINY:
        args += ["--set", setting]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "cmt" and summary["stage"] == "improvement"
    for key in ("eval", "eval_without_prompt_tuning"):
        assert summary[key]["normalized_score_mean"] is not None
        assert len(summary[key]["returns"]) == 2
    assert (out / "representation" / "checkpoints" / "last.pt").is_file()
    printed = capsys.readouterr().out
    assert "without prompt tuning" in printed

    # the improvement stage alone, from the finished representation stage, into another directory
    again = tmp_path / "again"
    assert main(args[:2] + ["--dataset", str(data), "--stage", "improvement", "--from", str(out),
                            "--out", str(again), "--eval-episodes", "2", "--no-progress"]
                + [a for s in TINY for a in ("--set", s)]) == 0
    assert json.loads((again / "summary.json").read_text())["eval"] is not None
    # but not from a representation stage trained on other data
    import shutil

    other = shutil.copy(data, tmp_path / "other.hdf5")
    capsys.readouterr()
    assert main(args[:2] + ["--dataset", str(other), "--stage", "improvement", "--from", str(out),
                            "--out", str(tmp_path / "mixed"), "--eval-episodes", "0", "--no-progress"]
                + [a for s in TINY for a in ("--set", s)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "was trained on" in err and err.count("\n") == 1
    # and `seqrl eval` reads the tuned policy, from the run's prompt source or the one asked for
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_source"] == "stored"
    assert main(["eval", str(out), "--episodes", "1", "--json", "--prompt-source", "history"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_source"] == "history"

    # the prompt map: a PNG and its scores, for this run beside its representation stage
    png = tmp_path / "prompts.png"
    assert main(["viz", "prompts", str(out), "--compare", str(out / "representation"), "--episodes", "4",
                 "--out", str(png)]) == 0
    assert png.stat().st_size > 10_000
    scores = json.loads(png.with_suffix(".json").read_text())
    assert len(scores) == 2 and 0.0 <= scores[0]["pair_nn_rate"] <= 1.0
    assert main(["viz", "prompts", str(tmp_path / "nowhere")]) == 2


def test_bench_planner_small(tmp_path):
    from seqrl.bench.planner_bench import run_planner_bench

    r = run_planner_bench(horizon=2, beam_width=2, candidates=2, plan_states=2, nocache_states=1,
                          act_envs=2, act_steps=3, rounds=1, out_dir=str(tmp_path))
    for key in ("speedup_vs_nocache", "plan_ms_per_state", "act_ms_per_state"):
        assert r[key] > 0
    assert r["cached_vs_nocache_max_action_diff"] < 1e-4
    assert (tmp_path / "planner.md").exists()


def test_cmt_errors_are_one_line(hopper_file, tmp_path, capsys):
    from seqrl.cli import main

    assert main(["train", "dt", "--dataset", str(hopper_file), "--stage", "improvement"]) == 2
    assert "--stage and --from are for cmt" in capsys.readouterr().err
    assert main(["train", "cmt", "--dataset", str(hopper_file), "--stage", "improvement",
                 "--from", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no finished CMT representation stage" in err
    assert err.count("\n") == 1
    from seqrl.algos.base import apply_overrides
    from seqrl.algos.cmt import CMTConfig
    from seqrl.errors import ConfigError

    with pytest.raises(ConfigError, match="prompt_source"):
        apply_overrides(CMTConfig(), ["prompt_source=best"]).check()
    with pytest.raises(ConfigError, match="stored_prompt_rule"):
        apply_overrides(CMTConfig(), ["stored_prompt_rule=best"]).check()


def test_stored_prompt_is_the_mean_or_the_medoid_of_the_best_fragments_prompts():
    from types import SimpleNamespace

    from seqrl.algos.cmt import CMTConfig, _CMTBase

    prompts = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]], [[4.0, 3.0]], [[0.9, 0.3]]])   # (N, P=1, D=2)
    mean = _CMTBase.summarise_prompts(SimpleNamespace(config=CMTConfig()), prompts)
    assert torch.allclose(mean, torch.tensor([[1.475, 0.825]]))
    medoid = _CMTBase.summarise_prompts(SimpleNamespace(config=CMTConfig(stored_prompt_rule="medoid")), prompts)
    assert torch.equal(medoid, prompts[3])   # the real prompt nearest the mean


def test_improvement_only_settings_decide_reuse_of_a_representation_stage():
    from seqrl.algos.cmt import improvement_only

    assert improvement_only(["behaviour_coef=0", "plan_horizon = 3"]) and improvement_only([])
    assert not improvement_only(["behaviour_coef=0", "contrastive_coef=1"])


def test_prompt_to_steps_makes_every_step_depend_on_the_prompt():
    torch.manual_seed(0)
    states, actions, rewards = torch.randn(1, 4, 3), torch.randn(1, 4, 2), torch.randn(1, 4)
    steps = torch.arange(4)[None]
    prompts = torch.randn(2, 2, 16)
    for flag in (False, True):
        gen = _tiny_cmt(prompt_to_steps=flag).generator
        tokens = [gen.embed_steps(states, actions, rewards, steps, gen.step_bias(p[None])) for p in prompts]
        assert torch.equal(tokens[0], tokens[1]) != flag   # the step tokens themselves carry the prompt


def test_improvement_stage_refuses_a_representation_trained_on_other_contents(tmp_path, capsys):
    """`--from` a representation stage of the same dataset name whose contents have changed since."""
    from seqrl.cli import main
    from seqrl.data.d4rl import save_d4rl

    data = tmp_path / "hopper_mine.hdf5"
    save_d4rl(make_dataset([40, 40], obs_dim=11, act_dim=3, seed=0), data)
    sets = [a for s in TINY for a in ("--set", s)]
    base = ["train", "cmt", "--dataset", str(data), "--steps", "4", "--eval-episodes", "0", "--no-progress"]
    assert main(base + ["--stage", "representation", "--out", str(tmp_path / "rep")] + sets) == 0
    save_d4rl(make_dataset([40, 40], obs_dim=11, act_dim=3, seed=1), data, overwrite=True)
    capsys.readouterr()
    assert main(base + ["--stage", "improvement", "--from", str(tmp_path / "rep"), "--out",
                        str(tmp_path / "imp")] + sets) == 2
    assert "other contents of" in capsys.readouterr().err
