"""cxr installs (make's set-up: pip install -e .) with exactly the runtime packages of
requirements.txt, and its commands run from any folder."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_package_declares_exactly_the_runtime_requirements():
    pyproject = (REPO / "pyproject.toml").read_text()
    block = re.search(r"dependencies = \[(.*?)\]", pyproject, re.S).group(1)
    declared = sorted(re.findall(r'"([^"]+)"', block))
    required = sorted(
        line.split("#")[0].strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    )
    assert declared == required


def test_commands_run_from_any_folder(tmp_path):
    for command in (
        [sys.executable, "-m", "cxr.prepare", "--help"],
        [sys.executable, "-m", "cxr.experiment", "--help"],
        [sys.executable, str(REPO / "train_det.py"), "--help"],
    ):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout.startswith("usage:"), result.stderr
