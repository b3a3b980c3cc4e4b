"""The import contracts in pyproject.toml are allow-lists: a violation added under a new name breaks them.

Each case copies the packages and pyproject.toml to a temporary folder, adds one module that breaks a
boundary, and runs ``lint-imports`` there (the real tool, on the real contracts).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_copy(tmp_path: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on a copy of the tree with the ``extra`` files (path → source) added."""
    for package in ("bot", "pipeline", "storage"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for relative, source in extra.items():
        with (tmp_path / relative).open("a") as file:  # a new module, or a line added to an existing one
            file.write(source)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tree_as_it_is_keeps_every_contract(tmp_path: Path) -> None:
    done = lint_copy(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("extra", "broken"),
    [
        ({"bot/core/leak.py": "import discord\n"}, "Discord's library is imported by its adapter only"),
        ({"bot/core/peek.py": "from storage import blobs\n"}, "Storage is used by the service"),
        ({"bot/queue_stats.py": "import aiosqlite\n"}, "Only storage, the service, the composition root"),
        ({"bot/core/render.py": "import pipeline.generate\n"}, "The bot reaches the GPU side only through"),
        ({"bot/telemetry.py": "import bot.core\n"}, "The bot's modules are layered"),
        ({"bot/core/peek.py": "import bot.service\n"}, "The bot's modules are layered"),
        ({"pipeline/leak.py": "import bot.core\n"}, "Packages are layered"),
        ({"storage/leak.py": "import torch\n"}, "The GPU stack lives on the GPU side"),
        ({"pipeline/styles.py": "import torch\n"}, "No chain of imports takes the bot's runtime to the GPU stack"),
    ],
    ids=["core-imports-discord", "core-imports-storage", "new-module-opens-db", "core-imports-a-gpu-stage",
         "undeclared-bot-module", "core-imports-the-service", "pipeline-imports-bot", "storage-imports-torch",
         "a-data-module-pulls-torch"],
)  # fmt: skip
def test_a_new_violation_breaks_its_contract(tmp_path: Path, extra: dict[str, str], broken: str) -> None:
    done = lint_copy(tmp_path, extra)
    assert done.returncode != 0, done.stdout
    # The contract's verdict is the first KEPT or BROKEN after its name in the summary.
    verdict = re.search(re.escape(broken) + r".*?\b(KEPT|BROKEN)\b", " ".join(done.stdout.split()))
    assert verdict is not None and verdict[1] == "BROKEN", done.stdout
