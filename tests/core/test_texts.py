"""Every text function is reachable from the flow and says something for every input it can get."""

from __future__ import annotations

import ast
import inspect
import types
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from bot.core import flow, texts
from bot.core.events import BotRejectReason
from bot.core.state import RunInfo, StyleInfo
from pipeline.jobs import ErrorCode, RejectReason

FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: fn for name, fn in inspect.getmembers(texts, inspect.isfunction) if fn.__module__ == texts.__name__
}
PUBLIC = {name for name in FUNCTIONS if not name.startswith("_")}

SAMPLES: dict[Any, list[Any]] = {
    int: [0, 1, 3, 20 * 1024 * 1024],
    float: [0.0, 0.37, 1.0],
    str: ["studio", "", "x" * 80],
    bool: [True, False],
    type(None): [None],
    StyleInfo: [StyleInfo("studio", "Clean"), StyleInfo("noir", builtin=False), StyleInfo("plain")],
    RunInfo: [
        RunInfo("run_00000001", "train", "running", 0.5),
        RunInfo("run_00000002", "generate", "queued", queue_position=2, style="studio"),
        RunInfo("run_00000003", "generate", "stalled"),
    ],
}


def samples(annotation: Any) -> list[Any]:
    """Values of a parameter's type: every member of an enum, a few of everything else."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [value for arg in get_args(annotation) for value in samples(arg)]
    if origin in (Sequence, tuple, list):
        items = samples(get_args(annotation)[0])
        return [tuple(items), ()]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return list(annotation)
    return SAMPLES[annotation]


def calls(fn: Callable[..., Any]) -> list[dict[str, Any]]:
    """Each parameter through all of its samples, the others at their first sample."""
    hints = get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters]
    options = {p: samples(hints[p]) for p in params}
    base = {p: values[0] for p, values in options.items()}
    return [base] + [{**base, p: value} for p in params for value in options[p][1:]]


#: Markdown or HTML that a platform could render instead of showing it.
MARKUP = ("**", "`", "<b>", "<i>", "<a ", "</", "&lt;")


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_text_is_a_non_empty_plain_string(name: str) -> None:
    fn = FUNCTIONS[name]
    for kwargs in calls(fn):
        result = fn(**kwargs)
        assert isinstance(result, str), (name, kwargs)
        assert result.strip(), (name, kwargs)
        assert not any(marker in result for marker in MARKUP), (name, result)


def _referenced_names(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} | {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
    }


def test_every_text_is_used() -> None:
    """Each function is called by the flow or an adapter, or by a text function one of them calls."""
    bot_dir = Path(inspect.getfile(flow)).parents[1]
    used = {
        node.attr
        for module in bot_dir.rglob("*.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "texts"
    }
    assert used <= PUBLIC, used - PUBLIC
    texts_tree = ast.parse(Path(inspect.getfile(texts)).read_text())
    bodies = {node.name: _referenced_names(node) for node in texts_tree.body if isinstance(node, ast.FunctionDef)}
    reachable, frontier = set(used), list(used)
    while frontier:
        for name in bodies[frontier.pop()] & set(FUNCTIONS):
            if name not in reachable:
                reachable.add(name)
                frontier.append(name)
    assert set(FUNCTIONS) - reachable == set()


@pytest.mark.parametrize("code", [*RejectReason, *BotRejectReason])
def test_every_reject_reason_has_its_own_words(code: str) -> None:
    assert texts.reject_reason(code, 10 * 1024 * 1024) != texts.reject_reason("no such reason", 1)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_is_explained(code: ErrorCode) -> None:
    assert texts.error_reason(code).endswith(".")


def test_progress_bar() -> None:
    assert texts.progress_bar(0.0) == "░░░░░░░░░░ 0%"
    assert texts.progress_bar(0.42) == "▓▓▓▓░░░░░░ 42%"
    assert texts.progress_bar(1.5) == "▓▓▓▓▓▓▓▓▓▓ 100%"


def test_the_preparing_progress_shows_the_workers_note_about_usable_photos() -> None:
    from pipeline.jobs import Stage

    assert "4 of 5 photos usable" in texts.progress(Stage.PREPARING, 1.0, None, "4 of 5 photos usable")
    assert "usable" not in texts.progress(Stage.TRAINING, 0.5, None, "4 of 5 photos usable")
