"""Every mistake a user can make: one line 'error: ...' on stderr, exit code 2, no traceback."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import make_dataset
from seqrl.cli import main
from seqrl.data.d4rl import save_d4rl


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("warning:")]
    return code, errors


def assert_one_line_error(capsys, argv, *fragments):
    code, errors = run_cli(capsys, *argv)
    assert code == 2, errors
    assert len(errors) == 1 and errors[0].startswith("error: "), errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in errors[0]


def write(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
    return str(path)


def good_arrays(n=6):
    return dict(observations=np.zeros((n, 3), np.float32), actions=np.zeros((n, 2), np.float32),
                rewards=np.ones(n, np.float32), terminals=np.zeros(n, bool), timeouts=np.zeros(n, bool))


def test_missing_file(capsys, tmp_path):
    assert_one_line_error(capsys, ["data", "info", str(tmp_path / "nope.hdf5")], "no such file", "nope.hdf5")


def test_not_hdf5(capsys, tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("these are not arrays\n")
    assert_one_line_error(capsys, ["data", "info", str(path)], "is not an HDF5 file", "notes.hdf5")


def test_truncated_file(capsys, tmp_path):
    path = save_d4rl(make_dataset([500, 500], obs_dim=20), tmp_path / "full.hdf5")
    data = path.read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(capsys, ["data", "info", str(cut)], "truncated or corrupt", "cut.hdf5")


def test_missing_required_key(capsys, tmp_path):
    arrays = good_arrays()
    del arrays["actions"]
    assert_one_line_error(capsys, ["data", "info", write(tmp_path / "a.hdf5", **arrays)],
                          "missing required key 'actions'")


def test_arrays_of_different_lengths(capsys, tmp_path):
    arrays = good_arrays()
    arrays["rewards"] = np.ones(5, np.float32)
    assert_one_line_error(capsys, ["data", "info", write(tmp_path / "a.hdf5", **arrays)],
                          "'rewards' has 5 rows but 'observations' has 6")


@pytest.mark.parametrize("bad,word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_nonfinite_values_name_key_and_index(capsys, tmp_path, bad, word):
    arrays = good_arrays()
    arrays["actions"][4, 1] = bad
    assert_one_line_error(capsys, ["data", "info", write(tmp_path / "a.hdf5", **arrays)],
                          f"'actions' contains {word} at index 4")


def test_empty_dataset(capsys, tmp_path):
    assert_one_line_error(capsys, ["data", "info", write(tmp_path / "a.hdf5", **good_arrays(0))],
                          "dataset is empty")


def test_unknown_dataset_name(capsys):
    assert_one_line_error(capsys, ["data", "info", "hopper-superb"], "unknown dataset 'hopper-superb'")


def test_dataset_not_made_yet(capsys):
    assert_one_line_error(capsys, ["data", "info", "hopper-medium"], "has not been made yet")


def test_unknown_minari_dataset(capsys):
    assert_one_line_error(capsys, ["data", "info", "minari:nobody/nothing-v0"], "no Minari dataset")


def test_unknown_environment(capsys, tmp_path):
    assert_one_line_error(capsys, ["data", "info", write(tmp_path / "a.hdf5", **good_arrays()),
                                   "--env", "spaceship"], "unknown environment 'spaceship'")



def test_bad_options(capsys):
    assert_one_line_error(capsys, ["data", "info"], "required: SOURCE")
    assert_one_line_error(capsys, ["data", "info", "x.hdf5", "--frobnicate"], "unrecognized arguments")
    assert_one_line_error(capsys, ["data", "export", "x.hdf5", "--to", "csv", "--out", "y"], "invalid choice")
    assert_one_line_error(capsys, ["bench", "data", "--steps", "-3"], "positive integer")
    assert_one_line_error(capsys, ["teleport"], "invalid choice")
    assert_one_line_error(capsys, [], "missing command")
    assert_one_line_error(capsys, ["data"], "missing subcommand")


def test_export_does_not_overwrite_without_force(capsys, tmp_path):
    src = write(tmp_path / "a.hdf5", **good_arrays())
    (tmp_path / "b.hdf5").write_text("mine")
    assert_one_line_error(capsys, ["data", "export", src, "--to", "d4rl", "--out", str(tmp_path / "b.hdf5")],
                          "already exists")
    assert (tmp_path / "b.hdf5").read_text() == "mine"
    assert_one_line_error(capsys, ["data", "export", src, "--to", "minari", "--out", "bad id"],
                          "bad Minari dataset id")


def test_real_process_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "seqrl.cli", "data", "info", str(tmp_path / "x.hdf5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: no such file: {tmp_path / 'x.hdf5'}"]


@pytest.mark.parametrize("setting,fragment", [
    ("batch_size=0", "batch_size must be >= 1"), ("context_len=0", "context_len must be >= 1"),
    ("embed_dim=0", "embed_dim must be >= 1"), ("num_layers=0", "num_layers must be >= 1"),
    ("num_heads=0", "num_heads must be >= 1"), ("num_heads=3", "divisible by num_heads"),
    ("learning_rate=-1", "learning_rate must be > 0"), ("learning_rate=nan", "finite"),
    ("betas=0.9", "betas must be two numbers"), ("dropout=1.5", "dropout must be in [0, 1)"),
    ("activation=foo", "activation must be one of"), ("timestep_embedding=foo", "timestep_embedding"),
    ("warmup_steps=-5", "warmup_steps must be >= 0"), ("grad_clip=-1", "grad_clip must be >= 0"),
    ("weight_decay=-1", "weight_decay must be >= 0"), ("return_scale=0", "return_scale must be > 0"),
    ("max_timestep=0", "max_timestep must be >= 1"), ("top_fraction=2", "top_fraction must be in (0, 1]"),
    ("eval_keep=50", "eval_keep must be between 0 and context_len - 1"),
])
def test_out_of_range_settings_are_one_line_errors_before_any_data_loads(capsys, setting, fragment):
    # the dataset does not exist: the setting must be rejected before anything is loaded or made
    assert_one_line_error(capsys, ["train", "dt", "--dataset", "no-such-dataset", "--set", setting], fragment)


@pytest.mark.parametrize("setting,fragment", [
    ("encoder_heads=3", "divisible by encoder_heads"), ("encoder_layers=0", "encoder_layers must be >= 1"),
    ("discount=1.5", "discount must be in [0, 1]"), ("temperature=0", "temperature must be > 0"),
    ("improve_learning_rate=-1", "improve_learning_rate must be > 0"),
    ("behaviour_coef=-1", "behaviour_coef must be >= 0"), ("adaptor_hidden=0", "adaptor_hidden must be >= 1"),
    ("contrastive_coef=nan", "finite"), ("prompt_top_fraction=0", "prompt_top_fraction must be in (0, 1]"),
])
def test_out_of_range_cmt_settings(capsys, setting, fragment):
    assert_one_line_error(capsys, ["train", "cmt", "--dataset", "no-such-dataset", "--set", setting], fragment)


def test_run_options_are_checked(capsys, tmp_path):
    data = str(save_d4rl(make_dataset([30, 30], obs_dim=11, act_dim=3), tmp_path / "d.hdf5"))
    base = ["train", "dt", "--dataset", data, "--steps", "1", "--eval-episodes", "0", "--no-progress"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    for extra, fragment in (
            (["--seed", "-1"], "seed must be an integer in [0, 2^63)"),
            (["--seed", str(2**64)], "seed must be an integer in [0, 2^63)"),
            (["--device", "foo"], "unknown device 'foo'"),
            (["--eval-every", "-5"], "eval_every must be >= 0"),
            (["--target-return", "nan"], "target returns must be finite"),
            (["--out", str(afile)], "an existing file"),
            (["--out", ""], "--out must name a run directory")):
        assert_one_line_error(capsys, base + extra, fragment)
    assert_one_line_error(capsys, ["train", "cmt", "--dataset", data, "--stage", "representation", "--from",
                                   str(tmp_path)], "--from names the representation stage")


def test_minari_ids_may_not_climb_out_of_the_root(capsys):
    assert_one_line_error(capsys, ["data", "make", "point-robot", "--out", "../../etc/x-v0"],
                          "bad Minari dataset id")


def test_bench_meta_variant_needs_a_name(capsys):
    for label in ("cmt-", "cmt-a/b", "x-1"):
        assert_one_line_error(capsys, ["bench", "meta", "point-robot", "--cmt-variant", label],
                              "--cmt-variant names a new CMT run")


def test_sizes_too_large_for_memory_are_a_user_error(capsys, tmp_path):
    # The first weight matrix alone (11 x 2^33 floats) is 352 GiB: refused at once, no OOM killer.
    data = str(save_d4rl(make_dataset([30, 30], obs_dim=11, act_dim=3), tmp_path / "d.hdf5"))
    assert_one_line_error(capsys, ["train", "dt", "--dataset", data, "--steps", "1", "--eval-episodes", "0",
                                   "--no-progress", "--out", str(tmp_path / "run"), "--set", "embed_dim=8589934592"],
                          "error: out of memory (tried to allocate", "lower batch_size")
