"""One `dspnet benchmark quality` run in its own process, kept on disk: the step shared by the
benchmark scripts that drive several runs (`time_to_best.py`, `learning_curve.py`).

A run whose folder already holds `results.json` is not run again, so a script stopped halfway
keeps what finished and a rerun picks up where it stopped. The run's output goes to
`<folder>.log`; a failed run raises with its exit code (its log says why).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Dict, List


def quality_run(dspnet: str, folder: str, flags: List[str], label: str) -> Dict[str, Any]:
    """`dspnet benchmark quality FLAGS --out FOLDER` unless FOLDER has results; its results.json."""
    results = os.path.join(folder, "results.json")
    if not os.path.isfile(results):
        command = [dspnet, "benchmark", "quality", *flags, "--out", folder]
        print(f"{time.strftime('%H:%M:%S')} {label}: {' '.join(command)}", flush=True)
        os.makedirs(folder, exist_ok=True)
        with open(folder + ".log", "w", encoding="utf-8") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    with open(results, encoding="utf-8") as handle:
        return json.load(handle)
