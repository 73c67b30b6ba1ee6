"""Benchmark scripts run as `python benchmarks/<name>.py` can import the repository's packages.

Run as a script, a file's own folder comes first on sys.path, so a benchmark named like a package
(`benchmarks/serving.py` once was) shadows that package for every script in the folder: it
stopped `pipeline_parity.py` at import. The first check forbids such names; the second runs each
script that imports `serving` the way `python benchmarks/<name>.py` does, then imports from
`serving`, in one subprocess.
"""

import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")

_CHECK = """
import runpy, sys
script = sys.argv[1]
sys.path.insert(0, __import__("os").path.dirname(script))  # what `python script` puts first
runpy.run_path(script)  # module level only: run_name is not __main__
sys.modules.pop("serving", None)  # forget any earlier module of that name
import serving.model_manager  # fails if the script's folder shadows the package
print("ok", script)
"""


def repository_packages():
    return {name for name in os.listdir(REPO)
            if os.path.isfile(os.path.join(REPO, name, "__init__.py"))}


def scripts_importing_serving():
    found = []
    for path in sorted(glob.glob(os.path.join(BENCHMARKS, "*.py"))):
        with open(path) as handle:
            if "from serving" in handle.read():
                found.append(path)
    return found


def test_no_benchmark_script_is_named_like_a_package():
    packages = repository_packages()
    assert {"dspnet_tf", "serving", "tfx_pipeline"} <= packages
    names = {os.path.splitext(os.path.basename(p))[0]
             for p in glob.glob(os.path.join(BENCHMARKS, "*.py"))}
    assert not names & packages, f"benchmarks/ shadows packages: {sorted(names & packages)}"


def test_benchmark_scripts_that_import_serving_see_the_package():
    scripts = scripts_importing_serving()
    assert {os.path.basename(path) for path in scripts} >= {"pipeline_parity.py",
                                                             "serving_latency.py"}
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    for script in scripts:
        result = subprocess.run([sys.executable, "-c", _CHECK, script], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{script}:\n{result.stderr[-2000:]}"
        assert f"ok {script}" in result.stdout
