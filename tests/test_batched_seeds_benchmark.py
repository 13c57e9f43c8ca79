"""benchmarks/batched_seeds.py runs end to end (tiny settings), and what it times is the same computation on
both paths: K stacked seeds under vmap give each seed's own module's outputs."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as when run as a script: it imports throughput.py beside it
    try:
        spec = importlib.util.spec_from_file_location("batched_seeds", ROOT / "benchmarks" / "batched_seeds.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_the_batched_forward_gives_each_seeds_own_outputs():
    bench = _load()
    for spec, _ in bench.MODELS.values():
        models = [bench._seeded_model(spec, s) for s in range(3)]
        forward, params, buffers = bench.stacked(models)
        x = torch.randn(3, 5, *spec.data_shape, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([[1, 200, 400, 600, 999]] * 3)
        out = forward(params, buffers, x, t)
        for k, model in enumerate(models):
            torch.testing.assert_close(out[k], model(x[k], t[k]), rtol=1e-4, atol=1e-5)


def test_batched_seeds_benchmark_smoke(tmp_path):
    bench = _load()
    out = tmp_path / "b.json"
    record = bench.main(["--ks", "1,2", "--steps", "1", "--reps", "2", "--eval-n", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    assert record["matmul_gflops"] > 0
    for res in record["results"]:
        assert set(res["rows"]) == {"single", "batched K=1", "batched K=2"} and res["step_gflop"] > 0
        for row in res["rows"].values():
            assert row["train"] > 0 and row["evaluate"] > 0
        assert res["rows"]["single"]["train_speedup"] == 1.0
