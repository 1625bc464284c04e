"""Reading the files a user hands sgtool (--config YAML, JSON sources, graph.json): regular files of bounded
size only (never a FIFO that blocks or /dev/zero that never ends), YAML nested at most MAX_DEPTH deep and
JSON within the parser's recursion limit, and a key written twice in one mapping refused instead of silently
keeping the last value."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from sgtool.errors import SgtoolError

MAX_DEPTH = 100  # YAML: far deeper than any real config; keeps merge() and PyYAML clear of RecursionError
CONFIG_BYTES = 16 << 20
DATA_BYTES = 8 << 30


def open_regular(path: Path, what: str, limit: int, hint: str) -> int:
    """A file descriptor of `path` after checking, without blocking, that it is a regular file of at most
    `limit` bytes; everything else is one sentence naming `what` (e.g. 'The config file')."""
    path = Path(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise SgtoolError(f"{path} is a directory, not a file.", "Pass the file itself.")
        if not stat.S_ISREG(info.st_mode):
            raise SgtoolError(f"{what} {path} is not a regular file (a pipe, device or socket cannot be read safely).",
                              hint)
        if info.st_size > limit:
            raise SgtoolError(f"{what} {path} is {info.st_size / 2**20:,.0f} MB, more than the {limit >> 20:,} MB "
                              "sgtool reads.", hint)
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError as exc:
        raise SgtoolError(f"{what} {path} does not exist.", "Check the path.") from exc
    except OSError as exc:
        raise SgtoolError(f"{what} {path} cannot be read ({exc.strerror or exc}).", "Check the path and its permissions.") from exc


def read_bytes(path: Path, what: str, limit: int, hint: str) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (a file still growing is cut off and refused)."""
    fd = open_regular(path, what, limit, hint)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SgtoolError(f"{what} {path} holds more than the {limit >> 20:,} MB sgtool reads.", hint)
    return data


def read_text(path: Path, what: str, limit: int, hint: str) -> str:
    data = read_bytes(path, what, limit, hint)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SgtoolError(f"{path} is not a text file (byte {exc.start} is not UTF-8).", hint) from exc


# ---------------------------------------------------------------- nesting and duplicate keys

def _too_deep(path: Path, hint: str) -> SgtoolError:
    return SgtoolError(f"{path} nests its lists or mappings too many levels deep for a data file.", hint)


def _unique_pairs(path: Path, hint: str):  # noqa: ANN202 (json's object_pairs_hook)
    def hook(pairs: list[tuple[str, Any]]) -> dict:
        mapping = dict(pairs)
        if len(mapping) < len(pairs):
            seen: set[str] = set()
            twice = next(key for key, _ in pairs if key in seen or seen.add(key))
            raise SgtoolError(f"{path} gives the key {twice!r} twice in one object.", hint)
        return mapping

    return hook


def parse_json(text: str, path: Path, hint: str) -> Any:
    """json.loads, refusing duplicate keys and nesting deeper than Python's recursion limit (json's C parser
    checks it), each in one sentence; nothing that reads the result recurses into it."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs(path, hint))
    except json.JSONDecodeError as exc:
        raise SgtoolError(f"{path} is not valid JSON ({exc}).", hint) from exc
    except RecursionError as exc:
        raise _too_deep(path, hint) from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping and nesting deeper than MAX_DEPTH."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_DEPTH} levels deep",
                                           problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        keys = [self.construct_object(key, deep=True) for key, _ in node.value]
        hashable = [key for key in keys if isinstance(key, (str, int, float, bool, type(None)))]
        if len(set(hashable)) < len(hashable):
            twice = next(key for i, key in enumerate(hashable) if key in hashable[:i])
            raise yaml.MarkedYAMLError(problem=f"the key {twice!r} is given twice in one mapping",
                                       problem_mark=node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """yaml.safe_load, refusing duplicate keys and deep nesting (yaml.YAMLError names the problem)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError as exc:
        raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_DEPTH} levels deep") from exc
