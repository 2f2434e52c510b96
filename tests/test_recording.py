"""Videos and the `jaxstep demo` command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxstep import cli, envs, recording


def decode_mp4(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]


def test_mp4_and_gif_round_trip(tmp_path):
    frames = [np.full((50, 61, 3), 40 * i, np.uint8) for i in range(6)]
    mp4 = decode_mp4(recording.write(frames, tmp_path / "a.mp4", fps=5))
    assert len(mp4) == 6 and mp4[0].shape == (50, 60, 3)  # cropped to even sizes for H.264
    assert abs(int(mp4[3].mean()) - 120) < 5
    gif = Image.open(recording.write(frames, tmp_path / "a.gif"))
    assert gif.n_frames == 6 and gif.size == (61, 50)


def test_write_rejects_bad_paths_and_empty_videos(tmp_path):
    with pytest.raises(ValueError, match="path"):
        recording.write([np.zeros((4, 4, 3), np.uint8)], tmp_path / "a.avi")
    with pytest.raises(ValueError, match="frames"):
        recording.write([], tmp_path / "a.mp4")


def test_record_draws_one_frame_per_step(tmp_path):
    env = envs.make("minimal", n_envs=2)
    state, ts = env.reset(jax.random.PRNGKey(0))

    def step(state, action):
        state, ts = env.step(state, action)
        return state, env.snapshot(state, ts.obs, 1)

    _, snapshots = jax.lax.scan(step, state, jnp.full((5, 2, 1), 5, jnp.int32))
    video = recording.record(env, snapshots, tmp_path / "turn.mp4", e=1, processes=2)
    frames = decode_mp4(video.path)
    assert len(frames) == 5
    assert not np.array_equal(frames[0], frames[4]), "the agent turns, so the picture changes"
    assert "data:video/mp4;base64," in video._repr_html_()


def test_demo_writes_a_video(tmp_path, capsys):
    out = tmp_path / "demo.gif"
    assert cli.main(["demo", "minimal", "--n-envs", "3", "--steps", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames/s" in printed and "cpu" in printed
    assert Image.open(out).n_frames == 12


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "nope"], "unknown env 'nope'"),
        (["demo", "--steps", "0"], "positive integer"),
        (["demo", "--out", "demo.avi"], "--out"),
        (["bench", "nothing"], "invalid choice"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["demo", "--help"])
    assert exit.value.code == 0
    assert "--n-envs" in capsys.readouterr().out


def test_record_works_from_an_unguarded_script(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import jax, jax.numpy as jnp\n"
        "from jaxstep import envs, recording\n"
        "env = envs.make('minimal', n_envs=2)\n"
        "state, ts = env.reset(jax.random.PRNGKey(0))\n"
        "def step(state, action):\n"
        "    state, ts = env.step(state, action)\n"
        "    return state, env.snapshot(state, ts.obs, 0)\n"
        "_, snaps = jax.lax.scan(step, state, jnp.full((6, 2, 1), 5, jnp.int32))\n"
        f"recording.record(env, snaps, {str(tmp_path / 'v.gif')!r}, processes=2)\n"
    )
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "v.gif").n_frames == 6
