"""benchmarks/throughput.py runs end to end (tiny settings) and its numbers hang together."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bench = _load()
    out = tmp_path / "t.json"
    args = ["--models", "unet-tiny,dit-tiny", "--dataset", "digits", "--batch-size", "8", "--steps", "1"]
    args += ["--reps", "2", "--warmup", "1", "--variants", "default,channels_last,for_loop_adamw", "--sample-n", "2"]
    results = bench.main([*args, "--out", str(out)])
    assert out.stat().st_size > 0
    assert results["matmul_gflops"] > 0
    for model in ("unet-tiny", "dit-tiny"):
        row = results["models"][model]
        assert set(row["images_per_s"]) == {"ours:default", "ours:channels_last", "ours:for_loop_adamw", "reference"}
        assert all(v > 0 for v in row["images_per_s"].values())
        assert row["ratio_to_reference"]["ours:default"] == pytest.approx(
            row["images_per_s"]["ours:default"] / row["images_per_s"]["reference"]
        )
        assert row["gflop_per_step"] > 0
    assert set(results["models"]["unet-tiny"]["ddim50_images_per_s"]) == {"ours", "DDIMPipeline"}
    assert "ddim50_images_per_s" not in results["models"]["dit-tiny"]


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit, match="unknown variants"):
        _load().main(["--variants", "warp_drive"])
