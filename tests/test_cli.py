"""The command line: clusters output, one-line user errors (exit 2) and tracebacks for bugs (exit 1)."""

import json
import subprocess
import sys

import pytest

from diffusion_curriculum.cli import main


def test_clusters_json_matches_the_library(capsys):
    assert main(["clusters", "-T", "1000", "-n", "20", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["start"], r["stop"]) for r in rows] == [(50 * i, 50 * i + 50) for i in range(20)]
    assert rows[0]["snr_high"] > rows[-1]["snr_low"]


def test_clusters_table(capsys):
    assert main(["clusters", "-n", "3", "--method", "snr", "--schedule", "cosine"]) == 0
    out = capsys.readouterr().out
    assert "squaredcos_cap_v2 schedule" in out and "cluster 0 = least noise (hardest)" in out
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["0", "1", "2"]


@pytest.mark.parametrize(
    "argv",
    [
        ["clusters", "-n", "0"],
        ["clusters", "-n", "50", "-T", "10"],
        ["clusters", "--method", "kmeans"],
        ["clusters", "-T", "ten"],
        ["nonsense"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(argv):
    proc = subprocess.run([sys.executable, "-m", "diffusion_curriculum.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("diffusion-curriculum")


def test_console_script_is_installed():
    proc = subprocess.run(["diffusion-curriculum", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "diffusion-curriculum" in proc.stdout


INTERNAL_ERROR = """
import sys
import diffusion_curriculum.clustering as clustering
from diffusion_curriculum.cli import main

def broken(*args, **kwargs):
    raise ValueError("an internal bug, deep inside")

clustering.cluster_timesteps = broken
sys.exit(main(sys.argv[1:]))
"""


def test_internal_error_keeps_its_traceback_and_exits_1():
    """A ValueError that is not a UserError is a bug: traceback and exit 1, not a one-line exit 2."""
    proc = subprocess.run([sys.executable, "-c", INTERNAL_ERROR, "clusters"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "an internal bug, deep inside" in proc.stderr
    argv = [sys.executable, "-c", INTERNAL_ERROR, "clusters", "-n", "0"]
    bad_flag = subprocess.run(argv, capture_output=True, text=True)
    assert bad_flag.returncode == 2 and len(bad_flag.stderr.strip().splitlines()) == 1


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """A SIGINT while the command is still importing torch and diffusers ends in one line and exit 130,
    not a traceback. The package and the CLI module import no torch before
    main() has installed its handling (checked directly: the timing of the signal alone cannot tell)."""
    import signal
    import time

    light = "import sys, diffusion_curriculum, diffusion_curriculum.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", light], check=True, timeout=120)

    # `train` (not `info`, which now starts in under 2 s and could be done before the signal comes):
    # at 1.5 s it is importing or building its run, and it would go on for minutes
    proc = subprocess.Popen(
        ["diffusion-curriculum", "train"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("diffusion-curriculum: interrupted")


def test_compare_help_names_every_preset():
    from diffusion_curriculum.experiments.grid import PRESETS

    proc = subprocess.run(["diffusion-curriculum", "compare", "--help"], capture_output=True, text=True, timeout=120)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and all(name in text for name in PRESETS), text
