"""End to end: the diffusers recipe trains through every stage and writes its outputs."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "diffusers_unconditional.py"


def test_diffusers_example_runs_through_all_stages(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(EXAMPLE),
        "--steps",
        "8",
        "--n-clusters",
        "3",
        "--batch-size",
        "16",
        "--num-samples",
        "4",
        "--patience",  # stages of 1 + 1 steps (no smoothing), capped there: through every stage in 8 steps
        "1",
        "--ema",
        "0",
        "--cap-multiple",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    stages = [r["stage"] for r in records]
    assert stages == sorted(stages) and stages[0] == 1 and stages[-1] == 3
    assert all(r["loss"] > 0 for r in records)
    png = (out / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
