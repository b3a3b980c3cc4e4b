#!/usr/bin/env python3
"""Why a worker's imports take as long as they do on this machine.

A worker's start (bench/worker_start.py) begins with importing torch and diffusers' pipeline
classes: 12–15 s of a 16–18 s restart on the H200 of session 4, against 4–5 s on the CI machine.
This reports, for the packages a worker imports, whether Python's bytecode caches (``.pyc``) for
this interpreter are there and whether Python could write them, then times the imports in fresh
processes: twice as they are, then twice with ``PYTHONPYCACHEPREFIX`` set to an empty folder (the
first of those writes the caches there, the second reads them). Prints one ``RESULT {json}`` line.

    python3 bench/import_probe.py [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "diffusers", "transformers", "sympy", "peft")

#: What a worker imports before it can load its models (as bench/worker_start.py times it).
IMPORTS = """
import time
started = time.perf_counter()
import torch
torch_s = time.perf_counter() - started
from diffusers import StableDiffusionPipeline
print(round(torch_s, 2), round(time.perf_counter() - started, 2))
"""


def bytecode_state(package: str) -> dict[str, Any]:
    """Whether ``package``'s own ``__init__`` has a .pyc for this interpreter, and if Python could write one."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return {"found": False}
    source = Path(spec.origin)
    cached = Path(importlib.util.cache_from_source(str(source)))
    return {
        "found": True,
        "folder": str(source.parent),
        "pyc_present": cached.is_file(),
        "writable": os.access(source.parent, os.W_OK),
    }


def time_imports(env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    torch_s, total_s = (float(x) for x in done.stdout.split()[-2:])
    return {"import_torch_s": torch_s, "imports_s": total_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", help="the PYTHONPYCACHEPREFIX folder to try (default: a new temporary one)")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "python": sys.version.split()[0],
        "dont_write_bytecode": bool(sys.flags.dont_write_bytecode),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "PYTHONPYCACHEPREFIX": os.environ.get("PYTHONPYCACHEPREFIX"),
        "packages": {name: bytecode_state(name) for name in PACKAGES},
    }
    env = dict(os.environ)
    result["as_is"] = [time_imports(env) for _ in range(2)]
    prefix = args.cache_dir or tempfile.mkdtemp(prefix="pycache-")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = prefix
    result["pycache_prefix"] = {"writing": time_imports(env), "reading": time_imports(env)}
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
