"""The ``seqrl`` command. Thin: it parses arguments and calls the library.

Every mistake a user can make ends in one line ``error: ...`` on stderr and exit code 2 (1 for a bug in
seqrl itself, with the traceback shown only when SEQRL_DEBUG=1). Heavy imports (torch, gymnasium, h5py)
happen inside the command functions, so ``seqrl --help`` stays quick.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from seqrl import __version__
from seqrl.errors import SeqrlError


class UsageError(SeqrlError):
    """A bad command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------------------- commands
def cmd_data_info(args) -> int:
    from seqrl.data.sources import dataset_info, load_source, reference_for

    dataset = load_source(args.source, env=args.env)
    if args.env:   # a reference score of another environment would be meaningless
        from seqrl.envs.registry import check_spaces

        check_spaces(args.env, dataset.obs_dim, dataset.act_dim, "data")
    info = dataset_info(dataset)
    if args.json:
        print(json.dumps(info))
        return 0
    ref = reference_for(dataset)
    lengths = dataset.episode_lengths
    rows = [
        ("source", args.source),
        ("environment", dataset.env_id or "unknown (pass --env to name it)"),
        ("episodes", f"{info['episodes']} ({int(dataset.episode_terminated.sum())} terminated, "
                     f"{info['episodes'] - int(dataset.episode_terminated.sum())} truncated)"),
        ("steps", f"{info['steps']} (episode length {lengths.min()}..{lengths.max()}, "
                  f"mean {lengths.mean():.1f})"),
        ("obs_dim / act_dim", f"{info['obs_dim']} / {info['act_dim']}"),
        ("return mean [min, max]", f"{info['return_mean']:.2f} [{info['return_min']:.2f}, "
                                   f"{info['return_max']:.2f}]"),
        ("normalized return mean", "n/a (no reference returns)" if ref is None else
         f"{info['normalized_return_mean']:.2f} (reference {ref[0]:g} .. {ref[1]:g})"),
        ("next_observations", "yes" if dataset.next_observations is not None else "no"),
    ]
    if dataset.episode_tasks is not None:
        family = dataset.metadata.get("seqrl_task_family", "?")
        train = dataset.metadata.get("seqrl_train_tasks", [])
        test_ids = dataset.metadata.get("seqrl_test_tasks", [])
        rows.append(("tasks", f"{info['tasks']} of family {family} ({len(train)} for training, "
                              f"{len(test_ids)} for testing)"))
        test = info["test_task_mean_return"]
        rows.append(("per-task mean return", f"{info['task_mean_return']:.2f} (test tasks: "
                     + ("none" if test is None else f"{test:.2f}") + ")"))
    if dataset.infos:
        rows.append(("infos", ", ".join(sorted(dataset.infos))))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_data_export(args) -> int:
    from seqrl.data.d4rl import save_d4rl
    from seqrl.data.minari_io import save_minari
    from seqrl.data.sources import load_source

    dataset = load_source(args.source, env=args.env)
    if args.to == "d4rl":
        out = save_d4rl(dataset, args.out, overwrite=args.force)
        print(f"wrote {dataset.num_episodes} episodes, {dataset.num_steps} steps to {out}")
    else:
        out = save_minari(dataset, args.out, overwrite=args.force)
        print(f"wrote {dataset.num_episodes} episodes, {dataset.num_steps} steps as Minari dataset "
              f"'{args.out}' ({out}); load it with minari.load_dataset('{args.out}')")
    return 0


def cmd_data_make(args) -> int:
    from seqrl.data.recipes import make

    target = make(args.name, steps=args.steps, seed=args.seed, fmt=args.format, out=args.out,
                  force=args.force, num_envs=args.num_envs, progress=not args.no_progress)
    if args.format == "minari":
        print(f"made {args.name} as Minari dataset '{target}'; `seqrl data info {args.name}` summarises it")
    else:
        print(f"made {args.name} as {target}")
    return 0


def cmd_data_list(args) -> int:
    from seqrl.data.meta_recipes import META_DATASET_NAMES, split_meta_name, steps_per_task
    from seqrl.data.minari_io import minari_root
    from seqrl.data.recipes import FULL_STEPS, MEDIUM_REPLAY_STEPS
    from seqrl.data.sources import DATASET_NAMES, split_name
    from seqrl.envs.tasks import FAMILIES

    print(f"seqrl datasets (Minari root {minari_root()}):")
    print(f"  {'name':<26} {'Minari id':<34} {'recipe steps':>12}  made")
    for name in DATASET_NAMES:
        env, kind = split_name(name)
        _print_recipe_row(name, MEDIUM_REPLAY_STEPS[env] if kind == "medium-replay" else FULL_STEPS[kind],
                          policies=env)
    print("meta-RL (multi-task) datasets, all tasks of the family; see docs/meta.md:")
    for name in META_DATASET_NAMES:
        family = FAMILIES[split_meta_name(name)[0]]
        _print_recipe_row(name, steps_per_task(family.name) * len(family.tasks),
                          policies=family.behaviour_family)
    return 0


def _print_recipe_row(name: str, recipe_steps: int, policies: str) -> None:
    """One line of `seqrl data list`: whether the dataset is made, else whether it can be."""
    from seqrl.data.minari_io import minari_dataset_exists, minari_root
    from seqrl.data.recipes import load_manifest
    from seqrl.data.sources import minari_id_for

    dataset_id = minari_id_for(name)
    if minari_dataset_exists(dataset_id):
        meta = json.loads((minari_root() / dataset_id / "data" / "metadata.json").read_text())
        made = f"yes, {meta.get('total_steps', '?')} steps"
    else:
        try:
            load_manifest(policies)
            made = "-"
        except SeqrlError:
            made = "- (no behaviour policies shipped yet)"
    print(f"  {name:<26} {dataset_id:<34} {recipe_steps:>12,}  {made}")


def cmd_bench_data(args) -> int:
    from seqrl.bench.data_bench import run_data_bench

    result = run_data_bench(steps=args.steps, seed=args.seed, out_dir=args.out,
                            seconds=args.seconds, command=" ".join(["seqrl"] + sys.argv[1:]))
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_bench_references(args) -> int:
    from seqrl.bench.references import run_references

    run_references(episodes=args.episodes, seed=args.seed, out_dir=args.out,
                   command=" ".join(["seqrl"] + sys.argv[1:]))
    return 0


def cmd_bench_make(args) -> int:
    from seqrl.bench.make_bench import run_make_bench

    run_make_bench(args.names, steps=args.steps, seed=args.seed, out_dir=args.out,
                   command=" ".join(["seqrl"] + sys.argv[1:]))
    return 0


def cmd_train(args) -> int:
    from seqrl.train import train

    summary = train(args.algo, args.dataset, env=args.env, steps=args.steps, seed=args.seed, out=args.out,
                    eval_every=args.eval_every, eval_episodes=args.eval_episodes,
                    target_returns=args.target_return, overrides=args.set or [], resume=args.resume,
                    progress=not args.no_progress, device=args.device, log_every=args.log_every,
                    checkpoint_every=args.checkpoint_every, stage=args.stage, from_dir=args.from_dir,
                    wandb_project=args.wandb, eval_workers=args.eval_workers)
    run_dir = os.path.dirname(os.path.dirname(summary["checkpoint"]))
    stage = f" ({summary['stage']} stage)" if summary.get("stage") else ""
    print(f"run directory: {run_dir}{stage} ({summary['steps']} updates, "
          f"{summary['train_updates_per_s']:.1f} updates/s)")
    if summary.get("eval_without_prompt_tuning"):
        print("without prompt tuning:", end=" ")
        _print_eval([summary["eval_without_prompt_tuning"]])
        print("with prompt tuning:" if summary.get("prompt_tuning") else "(prompt tuning off)", end=" ")
    _print_eval(summary["eval_all_targets"])
    return 0


def _print_eval(evals: list[dict]) -> None:
    for ev in evals:
        target = "" if ev["target_return"] is None else f"target {ev['target_return']:g}: "
        score = ("" if ev["normalized_score_mean"] is None else
                 f", normalised {ev['normalized_score_mean']:.1f} +- {ev['normalized_score_std']:.1f}")
        print(f"eval {target}return {ev['return_mean']:.1f} +- {ev['return_std']:.1f}{score} "
              f"({len(ev['returns'])} episodes, {ev['env_steps']} steps, {ev['seconds']:.1f} s)")
        if ev.get("video"):
            print(f"  video of the first episode: {ev['video']}")
        if ev.get("per_task"):
            curve = ", ".join(f"{x:.1f}" for x in ev["curve"])
            which = "training" if ev.get("tasks") == "train" else "held-out"
            print(f"  {ev['mode']} on {len(ev['per_task'])} {which} tasks; mean return per episode "
                  f"collected in a task: {curve}")


def cmd_eval(args) -> int:
    from seqrl.envs.registry import check_spaces, env_name, gym_id
    from seqrl.envs.scores import D4RL_REFERENCE_RETURNS
    from seqrl.eval.evaluator import evaluate_targets
    from seqrl.policy import Policy

    overrides = {} if args.keep is None else {"eval_keep": args.keep}
    if args.precision is not None:
        overrides["eval_precision"] = args.precision
    if args.prompt_source is not None:
        overrides["prompt_source"] = args.prompt_source
    if args.policy_prompt is not None:
        overrides["policy_prompt"] = args.policy_prompt
    if args.video is not None:
        from seqrl.eval.video import check_video_path

        check_video_path(args.video)
    from seqrl.train.trainer import check_seed

    check_seed(args.seed)
    if not all(math.isfinite(t) for t in args.target_return or []):
        raise SeqrlError(f"--target-return must be a finite number, got {args.target_return}")
    policy = Policy.load(args.run, **overrides)
    if args.policy_prompt is not None and policy.spec.get("model_class") != "CMT":
        raise SeqrlError("--policy-prompt is for meta-RL CMT runs")
    if policy.spec.get("meta") and args.env is not None:
        raise SeqrlError("--env is for single-task runs (a meta-RL run evaluates in its task family)")
    if args.prompt_source is not None and (policy.spec.get("model_class") != "CMT" or policy.spec.get("meta")):
        raise SeqrlError("--prompt-source is for single-task CMT runs")
    if policy.spec.get("meta") and args.workers > 1:
        raise SeqrlError("--workers is for single-task runs (meta-RL evaluation runs in one process)")
    if policy.spec.get("meta") and args.video is not None:
        raise SeqrlError("--video is for single-task runs (meta-RL evaluations run many tasks)")
    if policy.spec.get("meta"):  # meta-RL: held-out tasks, context by protocol (seqrl.eval.meta)
        from seqrl.eval.meta import evaluate_meta_policy

        targets = args.target_return or [None]
        evals = [evaluate_meta_policy(policy, mode=args.mode, tasks=args.tasks or "test",
                                      rounds=args.episodes,
                                      context=args.context, seed=args.seed, target_return=t,
                                      pick=args.pick)
                 for t in targets]
        if args.json:
            print(json.dumps(evals[0] if len(evals) == 1 else evals))
        else:
            _print_eval(evals)
        return 0
    if args.mode or args.context or args.pick != "random" or args.tasks is not None:
        raise SeqrlError("--mode, --context, --pick and --tasks are for meta-RL runs (trained on a "
                         "multi-task dataset)")
    env_id = gym_id(args.env) if args.env else policy.env_id
    if env_id is None:
        raise SeqrlError("the checkpoint does not name its environment: pass --env")
    check_spaces(env_id, policy.model.obs_dim, policy.model.act_dim, "policy")
    ref = policy.spec.get("reference_returns") or D4RL_REFERENCE_RETURNS.get(env_name(env_id))
    targets = args.target_return or ([policy.default_target_return]
                                     if policy.default_target_return is not None else [])
    if not getattr(policy.model, "condition_on_returns", False):
        targets = []
    evals = evaluate_targets(policy, env_id, args.episodes, targets, seed=args.seed,
                             reference=tuple(ref) if ref else None, video=args.video,
                             workers=args.workers)
    if args.video is not None and evals[0].get("video_failure"):
        print(f"warning: no video: {evals[0]['video_failure']}", file=sys.stderr)
    if args.json:
        print(json.dumps(evals[0] if len(evals) == 1 else evals))
    else:
        _print_eval(evals)
    return 0


def cmd_bench_eval(args) -> int:
    from seqrl.bench.eval_bench import run_eval_bench

    run_eval_bench(episodes=args.episodes, sequential_steps=args.sequential_steps, seed=args.seed,
                   out_dir=args.out, command=" ".join(["seqrl"] + sys.argv[1:]), workers=args.workers)
    return 0


def cmd_bench_train(args) -> int:
    from seqrl.bench.train_bench import run_train_bench

    run_train_bench(sizes=args.sizes, precisions=args.precision, seconds=args.seconds,
                    rounds=args.rounds, seed=args.seed, device=args.device, out_dir=args.out,
                    command=" ".join(["seqrl"] + sys.argv[1:]))
    return 0


def cmd_bench_quality(args) -> int:
    from seqrl.bench.quality import run_quality

    overrides: dict[str, list[str]] = {}
    for item in args.set or []:
        algo, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise UsageError(f"--set expects ALGO:key=value, got '{item}'")
        overrides.setdefault(algo, []).append(setting)
    run_quality(args.algos, args.datasets, args.seeds, steps=args.steps, eval_every=args.eval_every,
                eval_episodes=args.eval_episodes, eval_workers=args.eval_workers,
                overrides=overrides, runs=args.runs,
                score_threshold=args.score_threshold, out_dir=args.out, name=args.name,
                command=" ".join(["seqrl"] + sys.argv[1:]), progress=not args.no_progress)
    return 0


def cmd_bench_meta(args) -> int:
    from seqrl.bench.meta_bench import RUNS, run_meta_bench

    variants = args.cmt_variant or []
    for label in variants:
        if not label.startswith("cmt-") or not label[4:].replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"--cmt-variant names a new CMT run: 'cmt-' then letters, digits, - or _, "
                             f"got '{label}'")
    known = {"all"} | {label for label, _, _ in RUNS} | set(variants)
    overrides: dict[str, list[str]] = {}
    for item in args.set or []:
        run, sep, setting = item.partition(":")
        if not sep or "=" not in setting or run not in known:
            raise UsageError(f"--set expects RUN:key=value with RUN one of {', '.join(sorted(known))}, "
                             f"got '{item}'")
        overrides.setdefault(run, []).append(setting)
    run_meta_bench(args.dataset, args.seeds, steps=args.steps, rounds=args.rounds, overrides=overrides,
                   runs=args.runs, out_dir=args.out, name=args.name,
                   command=" ".join(["seqrl"] + sys.argv[1:]), progress=not args.no_progress,
                   cmt_variants=variants, baselines_from=args.baselines_from,
                   policy_prompt=args.policy_prompt, eval_workers=args.eval_workers)
    return 0


def cmd_bench_planner(args) -> int:
    from seqrl.bench.planner_bench import run_planner_bench

    result = run_planner_bench(horizon=args.horizon, beam_width=args.beam_width,
                               candidates=args.candidates, plan_states=args.states,
                               nocache_states=args.nocache_states, rounds=args.rounds, seed=args.seed,
                               out_dir=args.out, command=" ".join(["seqrl"] + sys.argv[1:]))
    if args.json:
        keys = ("plan_ms_per_state", "nocache_ms_per_state", "act_ms_per_state", "speedup_vs_nocache",
                "act_vs_plan", "cached_vs_nocache_max_action_diff", "met")
        print(json.dumps({k: result[k] for k in keys}))
    else:
        from seqrl.bench.planner_bench import _markdown

        print(_markdown(result))
    return 0


def cmd_viz_prompts(args) -> int:
    from seqrl.viz import plot_prompts

    out = args.out or os.path.join(args.run, "prompts.png")
    scores = plot_prompts([args.run] + (args.compare or []), out, episodes=args.episodes, seed=args.seed)
    for s in scores:
        print(f"{s['run']}: contrastive coef {s['contrastive_coef']:g}, same-episode nearest neighbour "
              f"{s['pair_nn_rate']:.2f} (chance {s['pair_nn_chance']:.3f}), return R2 of the map "
              f"{s['return_r2']:.2f}")
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    from seqrl.demo import run_demo

    run_demo(workdir=args.workdir, steps=args.steps, seed=args.seed, train_steps=args.train_steps)
    return 0


# ---------------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="seqrl", description="Offline reinforcement learning as sequence modelling.")
    parser.add_argument("--version", action="version", version=f"seqrl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    data = commands.add_parser("data", help="inspect, convert and list datasets")
    data_cmds = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser)
    source_help = ("a D4RL-layout .hdf5/.h5 file, minari:<dataset id>, or a seqrl dataset name "
                   "such as hopper-medium")

    info = data_cmds.add_parser("info", help="summarise a dataset")
    info.add_argument("source", metavar="SOURCE", help=source_help)
    info.add_argument("--env", help="environment of the data when the source does not say "
                                    "(e.g. hopper or Hopper-v5); enables normalised scores")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=cmd_data_info)

    export = data_cmds.add_parser("export", help="write a dataset as a D4RL HDF5 file or Minari dataset")
    export.add_argument("source", metavar="SOURCE", help=source_help)
    export.add_argument("--to", required=True, choices=["d4rl", "minari"], help="output format")
    export.add_argument("--out", required=True, metavar="PATH_OR_ID",
                        help="file path (d4rl) or Minari dataset id such as me/hopper/mine-v0 (minari)")
    export.add_argument("--env", help="environment of the data when the source does not say")
    export.add_argument("--force", action="store_true", help="replace an existing output")
    export.set_defaults(func=cmd_data_export)

    make = data_cmds.add_parser("make", help="generate a D4RL-style dataset from shipped behaviour policies")
    make.add_argument("name", metavar="NAME", help="e.g. hopper-medium (see `seqrl data list`)")
    make.add_argument("--steps", type=_positive_int, default=None,
                      help="total steps (default: the D4RL-sized recipe); smaller for quick runs")
    make.add_argument("--seed", type=int, default=0, help="seed; the same seed gives identical arrays")
    make.add_argument("--format", choices=["minari", "d4rl"], default="minari",
                      help="minari (default: into the Minari root as seqrl/<env>/<kind>-v0) or d4rl")
    make.add_argument("--out", default=None, metavar="PATH_OR_ID",
                      help="Minari id or .hdf5 path (default: seqrl/<env>/<kind>-v0 or NAME.hdf5)")
    make.add_argument("--num-envs", type=_positive_int, default=16, help="environment copies run at once")
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    make.add_argument("--force", action="store_true", help="make it again, replacing what is there")
    make.set_defaults(func=cmd_data_make)

    listing = data_cmds.add_parser("list", help="list seqrl dataset names and which are made")
    listing.set_defaults(func=cmd_data_list)

    bench = commands.add_parser("bench", help="measure speed (results go to benchmarks/results/)")
    bench_cmds = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", parser_class=_Parser)
    bdata = bench_cmds.add_parser("data", help="load time, memory and sampler throughput on a "
                                               "synthetic D4RL-layout file")
    bdata.add_argument("--steps", type=_positive_int, default=1_000_000, help="steps in the file")
    bdata.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and sampler")
    bdata.add_argument("--seconds", type=float, default=3.0, help="time per throughput measurement")
    bdata.add_argument("--out", default="benchmarks/results", help="folder for data.json and data.md")
    bdata.add_argument("--json", action="store_true", help="also print the result as JSON")
    bdata.set_defaults(func=cmd_bench_data)

    bref = bench_cmds.add_parser("references", help="random (and shipped expert) returns in the v5 "
                                                    "environments, beside D4RL's reference returns")
    bref.add_argument("--episodes", type=_positive_int, default=100, help="episodes per environment")
    bref.add_argument("--seed", type=int, default=0, help="seed")
    bref.add_argument("--out", default="benchmarks/results", help="folder for references.json/.md")
    bref.set_defaults(func=cmd_bench_references)

    bmake = bench_cmds.add_parser("make", help="make recipes at full size: their returns, wall time and "
                                               "peak memory")
    bmake.add_argument("names", nargs="*", default=["hopper-medium"], metavar="NAME", help="recipes")
    bmake.add_argument("--steps", type=_positive_int, default=None, help="steps (default: full recipe)")
    bmake.add_argument("--seed", type=int, default=0, help="seed")
    bmake.add_argument("--out", default="benchmarks/results", help="folder for make.json and make.md")
    bmake.set_defaults(func=cmd_bench_make)

    train = commands.add_parser("train", help="train an algorithm on a dataset and evaluate it")
    train.add_argument("algo", metavar="ALGO", help="dt (Decision Transformer), bc (behaviour cloning), "
                                                    "cmt (Contextual Meta Transformer, two stages) or "
                                                    "prompt-dt (Prompt-DT, multi-task datasets)")
    train.add_argument("--dataset", required=True, metavar="SOURCE", help=source_help)
    train.add_argument("--env", help="environment when the dataset does not name it (e.g. hopper)")
    train.add_argument("--steps", type=_positive_int, default=100_000, help="gradient updates")
    train.add_argument("--seed", type=int, default=0, help="seeds data order, initialisation and "
                                                            "evaluation episodes")
    train.add_argument("--out", default=None, metavar="DIR",
                       help="run directory (default: runs/ALGO-DATASET-sSEED)")
    train.add_argument("--eval-every", type=int, default=10_000, metavar="N",
                       help="evaluate every N updates and at the end (0: only at the end)")
    train.add_argument("--eval-episodes", type=int, default=10, metavar="N",
                       help="episodes per evaluation, run in parallel (0: no evaluation)")
    train.add_argument("--eval-workers", type=_positive_int, default=1, metavar="W",
                       help="processes the evaluation episodes are shared out to (e.g. the number of "
                            "cores; single-task datasets)")
    train.add_argument("--target-return", type=float, nargs="+", default=None, metavar="R",
                       help="target returns for evaluation (default: the papers' for the env)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="change an algorithm setting, e.g. --set embed_dim=256 (repeatable; "
                            "the settings are listed in docs/training.md)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last "
                                                             "checkpoint")
    train.add_argument("--log-every", type=_positive_int, default=100, help="updates per metrics row")
    train.add_argument("--checkpoint-every", type=_positive_int, default=5000, help="updates between "
                                                                                  "checkpoints")
    train.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--wandb", default=None, metavar="PROJECT",
                       help="also log metrics to this Weights & Biases project (pip install wandb; "
                            "WANDB_MODE=offline keeps the run on disk)")
    train.add_argument("--stage", choices=["representation", "improvement"], default=None,
                       help="cmt: run one stage only (default: both; --steps counts representation "
                            "updates, --set improve_steps=N the improvement stage's)")
    train.add_argument("--from", dest="from_dir", default=None, metavar="RUN_DIR",
                       help="cmt --stage improvement: the run holding the representation stage")
    train.set_defaults(func=cmd_train)

    ev = commands.add_parser("eval", help="evaluate a trained policy from its run directory or checkpoint")
    ev.add_argument("run", metavar="RUN_DIR_OR_CKPT", help="run directory or checkpoint file")
    ev.add_argument("--episodes", type=_positive_int, default=10, help="episodes, run in parallel")
    ev.add_argument("--workers", type=_positive_int, default=1, metavar="W",
                    help="processes the episodes are shared out to (e.g. the number of cores; "
                         "single-task runs)")
    ev.add_argument("--target-return", type=float, nargs="+", default=None, metavar="R",
                    help="target returns (default: the one the run evaluated with)")
    ev.add_argument("--env", help="environment (default: the one the run was trained for)")
    ev.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode")
    ev.add_argument("--keep", type=int, default=None, metavar="K",
                    help="steps kept when the DT context window is full (default K//2; K-1 recomputes "
                         "the last K steps every step, as the reference implementation)")
    ev.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                    help="precision of the rollouts (default: the run's eval_precision, fp32); bf16 is "
                         "faster on CPUs with bf16 units, its actions differ by bf16 rounding")
    ev.add_argument("--prompt-source", choices=("stored", "history"), default=None,
                    help="CMT runs: act from the stored prompt of the best offline episodes or from the "
                         "episode's own recent steps (default: the run's prompt_source)")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--video", default=None, metavar="FILE",
                    help="record the first episode to FILE (.gif, or .mp4 with pip install "
                         "'seqrl[video]'); needs offscreen OpenGL (EGL or OSMesa on a headless machine)")
    ev.add_argument("--mode", choices=("zero-shot", "few-shot", "none"), default=None,
                    help="meta-RL runs: where the context comes from (default: cmt zero-shot, "
                         "prompt-dt few-shot, dt none); --episodes is then episodes per task")
    ev.add_argument("--context", default=None, metavar="SOURCE",
                    help="meta-RL few-shot: the dataset the task contexts come from (e.g. "
                         "cheetah-vel-expert)")
    ev.add_argument("--pick", default="random", metavar="random|best",
                    help="meta-RL zero-shot: draw each context from a random earlier episode of the task "
                         "(default) or from the best so far")
    ev.add_argument("--policy-prompt", choices=("stored", "context"), default=None,
                    help="two-prompt meta-RL CMT: the policy prompt is the stored one (default) or read "
                         "from the context as well (then a context's quality sets the behaviour)")
    ev.add_argument("--tasks", choices=("test", "train"), default=None,
                    help="meta-RL runs: held-out (default) or training tasks")
    ev.set_defaults(func=cmd_eval)

    beval = bench_cmds.add_parser("eval", help="evaluation cost per environment step: batched KV-cache "
                                               "rollouts vs raw steps vs sequential full context")
    beval.add_argument("--episodes", type=_positive_int, default=40, help="parallel episodes")
    beval.add_argument("--sequential-steps", type=_positive_int, default=1000,
                       help="steps of the sequential full-context peer")
    beval.add_argument("--seed", type=int, default=0, help="seed")
    beval.add_argument("--workers", type=_positive_int, default=None, metavar="W",
                       help="processes of the worker-process row (default: the cores allowed, at least 2)")
    beval.add_argument("--out", default="benchmarks/results", help="folder for eval.json and eval.md")
    beval.set_defaults(func=cmd_bench_eval)

    btrain = bench_cmds.add_parser("train", help="training throughput against Hugging Face's "
                                                 "DecisionTransformerModel (needs seqrl[bench])")
    btrain.add_argument("--sizes", nargs="+", choices=["dt", "odt"], default=["dt", "odt"],
                        help="model sizes: dt (128d, 3L, batch 64), odt (512d, 4L, 4h, batch 256)")
    btrain.add_argument("--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="fp32 and/or bfloat16 autocast")
    btrain.add_argument("--seconds", type=float, default=10.0, help="timed seconds per implementation")
    btrain.add_argument("--rounds", type=_positive_int, default=3, help="alternating A/B rounds")
    btrain.add_argument("--seed", type=int, default=0, help="seed")
    btrain.add_argument("--device", default="cpu", help="torch device")
    btrain.add_argument("--out", default="benchmarks/results",
                        help="folder for train_throughput.json/.md")
    btrain.set_defaults(func=cmd_bench_train)

    bq = bench_cmds.add_parser("quality", help="train algorithms over seeds at a budget and tabulate "
                                              "last-checkpoint normalised scores")
    bq.add_argument("--algos", nargs="+", default=["dt", "bc"], help="algorithms")
    bq.add_argument("--datasets", nargs="+", default=["hopper-medium"], help="dataset sources")
    bq.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    bq.add_argument("--steps", type=_positive_int, default=100_000, help="updates per run (the budget)")
    bq.add_argument("--eval-every", type=int, default=10_000, help="updates between evaluations")
    bq.add_argument("--eval-episodes", type=_positive_int, default=10, help="episodes per evaluation")
    bq.add_argument("--eval-workers", type=_positive_int, default=1, metavar="W",
                    help="processes each evaluation's episodes are shared out to")
    bq.add_argument("--set", action="append", metavar="ALGO:KEY=VALUE", help="a setting for one algorithm")
    bq.add_argument("--runs", default="runs/quality", help="folder of the run directories")
    bq.add_argument("--score-threshold", type=float, default=50.0, help="score for the time-to-score column")
    bq.add_argument("--name", default="quality", help="result file stem in --out")
    bq.add_argument("--out", default="benchmarks/results", help="folder for the results")
    bq.add_argument("--no-progress", action="store_true", help="no progress bars")
    bq.set_defaults(func=cmd_bench_quality)

    bmeta = bench_cmds.add_parser("meta", help="offline meta-RL: CMT zero-/few-shot and the DT baselines "
                                               "on held-out tasks, over seeds")
    bmeta.add_argument("dataset", metavar="DATASET", help="a multi-task dataset, e.g. point-robot")
    bmeta.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    bmeta.add_argument("--steps", type=_positive_int, default=20_000,
                       help="updates per run (CMT: per stage unless --set cmt:improve_steps=N)")
    bmeta.add_argument("--rounds", type=_positive_int, default=3, help="episodes per held-out task")
    bmeta.add_argument("--set", action="append", metavar="RUN:KEY=VALUE",
                       help="a setting for one run (cmt, prompt-dt, dt, oracle-dt) or all of them (all:)")
    bmeta.add_argument("--cmt-variant", action="append", metavar="LABEL",
                       help="an extra CMT run with cmt's settings plus its own --set LABEL:key=value "
                            "(e.g. cmt-beta0 with --set cmt-beta0:behaviour_coef=0)")
    bmeta.add_argument("--baselines-from", default=None, metavar="RESULT.json",
                       help="train and evaluate the --cmt-variant runs only; copy the other rows from this "
                            "earlier result (same dataset, steps, rounds and seeds)")
    bmeta.add_argument("--policy-prompt", choices=("stored", "context"), default="stored",
                       help="two-prompt --cmt-variant runs: evaluate with the stored policy prompt (default) "
                            "or one read from the context as well")
    bmeta.add_argument("--eval-workers", type=_positive_int, default=1, metavar="W",
                       help="evaluate in W processes sharing the cores (the same episodes and returns; "
                            "e.g. 2 on two cores halves the evaluation time)")
    bmeta.add_argument("--runs", default="runs/meta", help="folder of the run directories")
    bmeta.add_argument("--name", default=None, help="result file stem in --out (default meta-DATASET)")
    bmeta.add_argument("--out", default="benchmarks/results", help="folder for the results")
    bmeta.add_argument("--no-progress", action="store_true", help="no progress bars")
    bmeta.set_defaults(func=cmd_bench_meta)

    bplan = bench_cmds.add_parser("planner", help="CMT beam search: KV cache vs recomputation, and "
                                                  "planning vs acting from the prompt")
    bplan.add_argument("--horizon", type=_positive_int, default=5, help="search depth")
    bplan.add_argument("--beam-width", type=_positive_int, default=8, help="beams kept per depth")
    bplan.add_argument("--candidates", type=_positive_int, default=8, help="actions per beam and depth")
    bplan.add_argument("--states", type=_positive_int, default=64, help="states per cached search")
    bplan.add_argument("--nocache-states", type=_positive_int, default=8,
                       help="states per uncached search")
    bplan.add_argument("--rounds", type=_positive_int, default=3, help="alternating rounds")
    bplan.add_argument("--seed", type=int, default=0, help="seed")
    bplan.add_argument("--json", action="store_true", help="print the key figures as JSON")
    bplan.add_argument("--out", default="benchmarks/results", help="folder for planner.json and planner.md")
    bplan.set_defaults(func=cmd_bench_planner)

    viz = commands.add_parser("viz", help="pictures of trained models")
    viz_cmds = viz.add_subparsers(dest="viz_command", metavar="WHAT")
    vp = viz_cmds.add_parser("prompts", help="2-D map (PCA) of CMT policy prompts coloured by return "
                                             "(the paper's Fig. 4)")
    vp.add_argument("run", metavar="RUN_DIR", help="a CMT run directory or checkpoint")
    vp.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                    help="more runs drawn beside it (e.g. one trained with --set contrastive_coef=1e-6)")
    vp.add_argument("--episodes", type=_positive_int, default=300, help="episodes (2 fragments each)")
    vp.add_argument("--seed", type=int, default=0, help="which episodes and fragments")
    vp.add_argument("--out", default=None, help="PNG file (default: RUN_DIR/prompts.png)")
    vp.set_defaults(func=cmd_viz_prompts)

    demo = commands.add_parser("demo", help="the quick tour: make, convert and sample data, then train "
                                            "and evaluate DT and BC on a small dataset")
    demo.add_argument("--workdir", default="runs/demo", help="folder for the demo's files")
    demo.add_argument("--steps", type=_positive_int, default=5000, help="steps to collect")
    demo.add_argument("--seed", type=int, default=0, help="seed")
    demo.add_argument("--train-steps", type=int, default=500, metavar="N",
                      help="updates of the DT and BC training part (0 skips it)")
    demo.set_defaults(func=cmd_demo)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation (CPU or GPU): sizes too large for the machine, not a bug."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc)
                                              or "out of memory" in str(exc).lower())


def _requested(exc: BaseException) -> str:
    """' (tried to allocate 9.8 GB)' when the allocator said how much, else ''."""
    import re

    found = re.search(r"allocate (\d+) bytes", str(exc))
    return f" (tried to allocate {int(found.group(1)) / 1e9:.1f} GB at once)" if found else ""


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning   # warnings as one line, like errors
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            sub = {"data": "data", "bench": "bench", "viz": "viz"}.get(getattr(args, "command", None) or "")
            raise UsageError(f"missing {'subcommand for ' + sub if sub else 'command'} "
                             f"(see `seqrl {sub + ' ' if sub else ''}--help`)")
        from seqrl.envs.registry import check_mujoco_gl

        check_mujoco_gl()
        return int(args.func(args) or 0)
    except SeqrlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in seqrl: still one line unless asked for the traceback
        if os.environ.get("SEQRL_DEBUG"):
            raise
        if _out_of_memory(exc):
            print(f"error: out of memory{_requested(exc)}: lower batch_size, context_len, prompt_len or the "
                  f"model's size (embed_dim, num_layers) with --set, or use a machine with more memory",
                  file=sys.stderr)
            return 2
        msg = " ".join(str(exc).split())[:300]
        print(f"error: internal error ({type(exc).__name__}: {msg}); rerun with SEQRL_DEBUG=1 for the "
              f"traceback and please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
