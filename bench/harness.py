"""What the GPU benches share: their sections run one after another, and the summary printed last."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any


def run_sections(bench: object, sections: Iterable[str], record: Callable[..., None]) -> bool:
    """Run ``bench.section_<name>()`` for each name in ``sections``; False when any of them raised.

    A section that raises is printed and recorded as an ``(name, "error")`` row, and the next one runs:
    one broken section must not cost the others' device time.
    """
    ok = True
    for section in filter(None, sections):
        started = time.perf_counter()
        try:
            getattr(bench, f"section_{section}")()
        except Exception as exc:
            traceback.print_exc()
            record(section, "error", error=f"{type(exc).__name__}: {exc}"[:800])
            ok = False
        print(f"section {section} took {time.perf_counter() - started:.1f}s", flush=True)
    return ok


def print_summary(rows: Iterable[dict[str, Any]]) -> None:
    """Every result row again, one JSON line each, after the sections' own output."""
    print("\n==== SUMMARY ====")
    for row in rows:
        print(json.dumps(row))
