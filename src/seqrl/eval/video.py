"""A video of one evaluation episode: frames from gymnasium's ``rgb_array`` rendering, written as a GIF
(Pillow, which matplotlib already brings) or an MP4 (imageio with its ffmpeg binary: the ``video``
extra, ``pip install 'seqrl[video]'``).

MuJoCo renders offscreen through OpenGL, with the backend named by ``MUJOCO_GL``. Left unset,
gymnasium tries GLFW first, which fails on a machine without a display, so there we choose EGL
(``MUJOCO_GL=osmesa`` is the software fallback). Where rendering fails, the evaluation goes on without
a video and says so in one line (``VideoRecorder.failure``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from seqrl.errors import ConfigError

FORMATS = (".gif", ".mp4")


def check_video_path(path: str | os.PathLike) -> Path:
    """The path as a Path, or a ConfigError before any work if it cannot be written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"video file must end in {' or '.join(FORMATS)}, got '{path.name}'")
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise ConfigError("an .mp4 video needs imageio-ffmpeg: pip install 'seqrl[video]' "
                              "(or write a .gif)") from None
    if not path.parent.exists():
        raise ConfigError(f"video folder {path.parent} does not exist")
    return path


def prefer_offscreen_gl() -> None:
    """On a Linux machine without a display, render through EGL unless ``MUJOCO_GL`` says otherwise
    (gymnasium reads it when an environment first renders)."""
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and headless:
        os.environ.setdefault("MUJOCO_GL", "egl")


class VideoRecorder:
    """Collects frames of one environment until ``stop``; ``failure`` holds why rendering failed."""

    def __init__(self, env, path: Path):
        self.env, self.path = env, path
        self.frames: list[np.ndarray] = []
        self.failure: str | None = None
        self.recording = True

    def capture(self) -> None:
        if not self.recording:
            return
        try:
            frame = self.env.render()
        except Exception as exc:  # noqa: BLE001 - any OpenGL failure: no video, evaluation goes on
            self.failure = f"rendering failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
            self.recording, self.frames = False, []
            return
        if frame is None:
            self.failure = "the environment renders no rgb_array frames"
            self.recording, self.frames = False, []
            return
        self.frames.append(np.asarray(frame, dtype=np.uint8))

    def stop(self) -> None:
        self.recording = False

    def save(self, fps: float) -> str | None:
        """Write the frames (atomically: a temporary file renamed into place); the path, or None."""
        if not self.frames:
            return None
        write_video(self.frames, self.path, fps)
        return str(self.path)


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, prefix=".video-", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, save_all=True, append_images=images[1:], loop=0,
                           duration=max(1, round(1000 / fps)))
        else:
            import imageio.v2 as imageio

            with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1) as writer:
                for f in frames:
                    writer.append_data(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)                   # mkstemp makes it private; a video is not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
