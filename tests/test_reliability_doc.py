"""docs/reliability.md promises a test for every fault it lists: each row names one, and it exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: ``tests/x.py::test_name``, or ``tests/x.py`` for a whole file.
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _rows() -> list[str]:
    lines = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8").splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith("| **")]
    return table[1:]  # the header row


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_row_names_a_test_that_exists() -> None:
    rows = _rows()
    assert len(rows) > 40, "the table was not found"
    for row in rows:
        refs = TEST_REF.findall(row)
        assert refs, f"a row without a test: {row[:100]}"
        for file, name in refs:
            assert (ROOT / file).is_file(), f"{file} is named in docs/reliability.md but does not exist"
            assert not name or name in _test_names(ROOT / file), f"{file}::{name} is named there but does not exist"
