"""`jaxstep bench`: rows with compile time and memory per env, n_envs sweeps that stop at out-of-memory, plots."""

import json

import pytest

from jaxstep import bench, cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(res=8, backends=["ffi"], geometry="box", steps=2, repeats=1)


def _out_of_memory_from(call: int, real=None):
    """A stand-in for bench._measure that raises XLA's out-of-memory error from its `call`th call (1-based) on;
    before that it runs `real`, or returns made-up numbers."""
    calls = []

    def measure(fn, args, repeats):
        calls.append(fn)
        if len(calls) >= call:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123456 bytes.")
        return real(fn, args, repeats) if real else (0.5, 0.01, 4096)

    return measure


def test_kernel_rows_have_compile_time_and_memory():
    progress = []
    result = bench.kernels(n_envs=[4, 8], progress=progress.append, **TINY)
    assert result["device"] and result["platform"] == "cpu"
    rows = result["results"]
    assert [(r["kernel"], r["n_envs"]) for r in rows] == [
        ("render", 4), ("observe", 4), ("physics", 4), ("render", 8), ("observe", 8), ("physics", 8),
    ]  # fmt: skip
    for row in rows:
        assert row["memory_bytes_per_env"] > 0
        assert row["compile_seconds"] > 0
        assert row["seconds_per_step"] > 0
    assert all(r["frames_per_second"] > 0 for r in rows if r["kernel"] in ("render", "observe"))
    assert [r["subsample"] for r in rows[:3]] == [None, 4, None]
    assert all(r["agent_steps_per_second"] > 0 for r in rows if r["kernel"] == "physics")
    # a render of 8 pixels per agent needs more per env than its 2 image columns, and those more than a physics
    # step, which draws nothing
    assert rows[0]["memory_bytes_per_env"] > rows[1]["memory_bytes_per_env"] > rows[2]["memory_bytes_per_env"]
    assert len(progress) == 6 and "KiB/env" in progress[0]
    json.dumps(result)


def test_kernels_rejects_unknown_kernels_and_a_subsample_that_does_not_divide_res():
    with pytest.raises(ValueError, match="kernels"):
        bench.kernels(n_envs=[4], kernels=["raytrace"], **TINY)
    with pytest.raises(ValueError, match="subsample"):
        bench.kernels(n_envs=[4], subsample=3, **TINY)


def test_env_rows_have_compile_time_and_memory():
    result = bench.envs(["minimal"], [4], steps=2, repeats=1)
    [row] = result["results"]
    assert row["env"] == "minimal" and row["n_envs"] == 4
    assert row["memory_bytes_per_env"] > 0 and row["compile_seconds"] > 0 and row["frames_per_second"] > 0


def test_sweep_sizes():
    sizes = bench.sweep_sizes()
    assert sizes[0] == 1024 and sizes[-1] == 1 << 20 and len(sizes) == 11
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))
    assert bench.sweep_sizes(20, 4) == [4, 8, 16]
    assert bench.sweep_sizes(3, 4) == []


def test_kernel_sweep_stops_at_out_of_memory(monkeypatch):
    # render and physics at 4 envs run; both run out of memory at 8, so 16 is never tried
    monkeypatch.setattr(bench, "_measure", _out_of_memory_from(3, real=bench._measure))
    progress = []
    kernels = ["render", "physics"]
    rows = bench.kernels(n_envs=bench.sweep_sizes(16, 4), progress=progress.append, kernels=kernels, **TINY)["results"]
    assert [r["n_envs"] for r in rows] == [4, 4, 8, 8]
    assert all("error" not in r and r["memory_bytes_per_env"] > 0 for r in rows[:2])
    assert rows[2:] == [
        {"kernel": "render", "backend": "ffi", "n_envs": 8, "error": "out of memory"},
        {"kernel": "physics", "backend": "ffi", "n_envs": 8, "error": "out of memory"},
    ]
    assert "out of memory" in progress[-1]


def test_each_kernel_stops_on_its_own(monkeypatch):
    # only the render at 8 envs fails (the 3rd call): physics goes on to 16
    calls = []

    def measure(fn, args, repeats):
        calls.append(fn)
        if len(calls) == 3:
            raise RuntimeError("Out of memory allocating 99 bytes")
        return 0.5, 0.01, 4096

    monkeypatch.setattr(bench, "_measure", measure)
    rows = bench.kernels(n_envs=[4, 8, 16], kernels=["render", "physics"], **TINY)["results"]
    assert [(r["kernel"], r["n_envs"], "error" in r) for r in rows] == [
        ("render", 4, False), ("physics", 4, False), ("render", 8, True), ("physics", 8, False), ("physics", 16, False),
    ]  # fmt: skip
    assert rows[0]["memory_bytes_per_env"] == 4096 / 4


def test_env_sweep_stops_at_out_of_memory(monkeypatch):
    monkeypatch.setattr(bench, "_measure", _out_of_memory_from(2))
    rows = bench.envs(["minimal", "explorer"], bench.sweep_sizes(16, 4), steps=2, repeats=1)["results"]
    # every call from the second on fails, so each env stops at its first failure
    assert [(r["env"], r["n_envs"], r.get("error")) for r in rows] == [
        ("minimal", 4, None), ("minimal", 8, "out of memory"), ("explorer", 4, "out of memory"),
    ]  # fmt: skip


def test_other_errors_propagate(monkeypatch):
    def measure(fn, args, repeats):
        raise ValueError("not a memory problem")

    monkeypatch.setattr(bench, "_measure", measure)
    with pytest.raises(ValueError, match="not a memory problem"):
        bench.kernels(n_envs=[4], **TINY)
    with pytest.raises(ValueError, match="not a memory problem"):
        bench.envs(["minimal"], [4], steps=2, repeats=1)


def test_plot_writes_a_png(tmp_path):
    rows = [
        dict(kernel="render", backend="ffi", n_envs=1024, frames_per_second=1e6),
        dict(kernel="render", backend="ffi", n_envs=2048, frames_per_second=1.8e6),
        dict(kernel="render", backend="ffi", n_envs=4096, error="out of memory"),
        dict(kernel="physics", backend="ffi", n_envs=1024, agent_steps_per_second=5e7),
        dict(kernel="physics", backend="ffi", n_envs=2048, agent_steps_per_second=9e7),
    ]
    path = tmp_path / "kernels.png"
    bench.plot(dict(benchmark="kernels", device="cpu", results=rows), str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    path = tmp_path / "envs.png"
    rows = [dict(env="minimal", n_envs=4, frames_per_second=10.0)]
    bench.plot(dict(benchmark="envs", device="cpu", results=rows), path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_cli_bench_kernels_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "kernels.json", tmp_path / "kernels.png"
    argv = ["bench", "kernels", "--n-envs", "4", "--steps", "2", "--repeats", "1", "--res", "8", "--backends", "ffi"]
    assert cli.main([*argv, "--out", str(out), "--plot", str(png)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "kernels" and result["device"]
    assert [r["kernel"] for r in result["results"]] == ["render", "observe", "physics"]
    assert all(r["memory_bytes_per_env"] > 0 and r["compile_seconds"] > 0 for r in result["results"])
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {png}" in capsys.readouterr().err


def test_cli_bench_envs_sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_measure", _out_of_memory_from(2))
    out, png = tmp_path / "envs.json", tmp_path / "envs.png"
    argv = ["bench", "envs", "--envs", "minimal", "--sweep", "--min-n-envs", "4", "--max-n-envs", "64"]
    assert cli.main([*argv, "--steps", "2", "--repeats", "1", "--out", str(out), "--plot", str(png)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["n_envs"], r.get("error")) for r in rows] == [(4, None), (8, "out of memory")]
    assert png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "kernels", "--sweep", "--n-envs", "4"], "not allowed with"),
        (["bench", "scaling", "--sweep"], "--sweep and --plot"),
        (["bench", "kernels", "--plot", "fps.txt"], "--plot"),
        (["bench", "envs", "--sweep", "--min-n-envs", "64", "--max-n-envs", "8"], "--min-n-envs"),
        (["bench", "train", "--set", "widht=3"], "KEY one of"),
        (["bench", "train", "--set", "epochs=two"], "epochs: expected int"),
        (["bench", "train", "--set", "epochs=0", "--n-envs", "4"], "epochs: expected a positive int"),
        (["bench", "train", "--envs", "nowhere"], "unknown env 'nowhere'"),
        (["bench", "train", "--plot", "t.png"], "--sweep and --plot"),
    ],
)
def test_cli_bench_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_bench_train_times_an_update_and_its_rollout(tmp_path):
    out = tmp_path / "train.json"
    argv = ["bench", "train", "--envs", "waypoint", "--n-envs", "4", "--repeats", "1", "--out", str(out)]
    assert cli.main([*argv, "--set", "rollout=3", "epochs=1", "agent=feedforward", "lr=1e-3"]) == 0
    result = json.loads(out.read_text())
    (row,) = result["results"]
    assert result["overrides"] == dict(rollout=3, epochs=1, agent="feedforward", lr=1e-3)
    assert row["config"]["rollout"] == 3 and row["config"]["agent"] == "feedforward" and row["n_envs"] == 4
    assert 0 < row["rollout_seconds"] and row["learn_seconds"] >= 0 and row["compile_seconds"] > 0
    assert row["agent_steps_per_second"] == pytest.approx(4 * 3 / row["seconds_per_update"])
