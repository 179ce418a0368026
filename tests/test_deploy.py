"""What a platform installs and runs: the lock file a buildpack reads, kept in step with setup.cfg."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.system import ROOT

#: The command that compiles the lock file, as its header names it.
COMPILE = "uv pip compile requirements.in --python-version 3.11 -o requirements.txt"


def test_the_lock_file_is_what_setup_cfg_asks_for(tmp_path):
    # Given the lock file compiled again from setup.cfg's requirements, keeping the versions it pins
    recompiled = tmp_path / "requirements.txt"
    shutil.copy(ROOT / "requirements.txt", recompiled)
    uv = Path(sys.executable).parent / "uv"
    result = subprocess.run(
        [str(uv), "pip", "compile", "requirements.in", "--python-version", "3.11", "-o", str(recompiled), "-q"]
        + ["--custom-compile-command", COMPILE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # Then nothing changes: a requirement added to setup.cfg and not to the lock file shows here
    assert recompiled.read_text() == (ROOT / "requirements.txt").read_text(), f"run `{COMPILE}` and commit it"


def test_the_platform_runs_the_python_the_project_is_tested_on():
    assert (ROOT / ".python-version").read_text().strip() == f"{sys.version_info.major}.{sys.version_info.minor}"
