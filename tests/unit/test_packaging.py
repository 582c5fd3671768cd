"""What the wheel installs: one import package, ``stream``, with the files it
needs at run time (the dashboard's chart library, py.typed); the example
programs in producers/ and consumers/ stay out of site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_one_import_package(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("learnstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"stream"}
    assert {"stream/py.typed", "stream/serve/static/uPlot.iife.min.js"} <= set(names)
    assert "stream/commands/work.py" in names
