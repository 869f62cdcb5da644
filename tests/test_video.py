"""Videos of evaluation episodes: frames, file writing, failures that must not stop an evaluation."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from seqrl.cli import main
from seqrl.errors import ConfigError
from seqrl.eval.video import VideoRecorder, check_video_path


class FrameEnv:
    """Renders a frame whose colour is the number of frames rendered so far."""

    def __init__(self, fail=False):
        self.calls, self.fail = 0, fail

    def render(self):
        if self.fail:
            raise RuntimeError("no OpenGL here\nsecond line")
        self.calls += 1
        return np.full((8, 8, 3), self.calls * 10, dtype=np.uint8)


def test_recorder_writes_every_captured_frame_until_stop(tmp_path):
    recorder = VideoRecorder(FrameEnv(), tmp_path / "ep.gif")
    for _ in range(5):
        recorder.capture()
    recorder.stop()
    recorder.capture()                      # after stop: ignored
    assert recorder.save(fps=25) == str(tmp_path / "ep.gif")
    gif = Image.open(tmp_path / "ep.gif")
    assert gif.n_frames == 5
    colours = []
    for i in range(5):
        gif.seek(i)
        colours.append(np.asarray(gif.convert("RGB"))[0, 0, 0])
    assert colours == [10, 20, 30, 40, 50]
    assert os.listdir(tmp_path) == ["ep.gif"]          # no temporary file left behind
    assert os.stat(tmp_path / "ep.gif").st_mode & 0o044  # readable by others, unlike a mkstemp file


def test_render_failure_gives_a_reason_and_no_file(tmp_path):
    recorder = VideoRecorder(FrameEnv(fail=True), tmp_path / "ep.gif")
    recorder.capture()
    assert recorder.failure.startswith("rendering failed (RuntimeError: no OpenGL here)")
    assert recorder.save(fps=25) is None and not os.listdir(tmp_path)


def test_video_path_checks(tmp_path):
    assert check_video_path(tmp_path / "a.GIF").name == "a.GIF"
    with pytest.raises(ConfigError, match="must end in .gif or .mp4"):
        check_video_path(tmp_path / "a.avi")
    with pytest.raises(ConfigError, match="does not exist"):
        check_video_path(tmp_path / "missing" / "a.gif")


class StandStill:
    """A policy object as the evaluator needs it: zero actions, any batch."""

    def reset(self, target_return=None, num_envs=1):
        self.n = num_envs

    def act(self, obs, reward):
        return np.zeros((len(obs), 3), dtype=np.float32)

    def select(self, keep):
        pass


def test_evaluation_records_the_first_episode(tmp_path):
    from seqrl.eval import evaluate

    result = evaluate(StandStill(), "Hopper-v5", episodes=3, seed=0, video=tmp_path / "ep.gif")
    if result["video"] is None:
        pytest.skip(f"no offscreen OpenGL on this machine: {result['video_failure']}")
    assert result["video_failure"] is None
    # one frame after reset, then one per step of episode 0 (and none after it ended)
    assert Image.open(result["video"]).n_frames == result["episode_lengths"][0] + 1
    plain = evaluate(StandStill(), "Hopper-v5", episodes=3, seed=0)
    assert plain["returns"] == result["returns"]       # rendering changes nothing in the episodes
    assert "video" not in plain


@pytest.mark.parametrize("argv, message", [
    (["eval", "/no/such/run", "--video", "x.avi"], "must end in .gif or .mp4"),
    (["eval", "/no/such/run", "--video", "/no/such/dir/x.gif"], "does not exist"),
])
def test_cli_video_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_unusable_mujoco_gl_is_one_line():
    # MuJoCo reads MUJOCO_GL when it is first imported, so this needs a fresh process.
    env = {**os.environ, "MUJOCO_GL": "no-such-backend"}
    done = subprocess.run([sys.executable, "-m", "seqrl.cli", "data", "list"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: MuJoCo cannot start with MUJOCO_GL=no-such-backend")
    assert done.stderr.count("\n") == 1
