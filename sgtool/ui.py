"""What the user sees: progress bars, tables, JSON. Results go to stdout, chatter to stderr."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Reporter:
    """Progress and messages for one command; silent when quiet."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:
            err.print(message)

    def warn(self, message: str) -> None:
        """Something the user should know although the command goes on (stderr, prefixed 'Warning:')."""
        if not self.quiet:
            err.print(f"[bold yellow]Warning:[/] {escape(message)}", highlight=False)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=err, disable=self.quiet, transient=False) as bar:
            yield bar

    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        with self.progress() as bar:
            task = bar.add_task(description, total=total, status="")
            for item in items:
                yield item
                bar.advance(task)


SILENT = Reporter(quiet=True)


def print_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    out.print(table)


def show_run(payload: dict, as_json: bool, title: str, metrics: dict[str, float], names: Sequence[str]) -> None:
    """A finished run: its payload as JSON, or a table of the named metrics (in %) and the run folder."""
    if as_json:
        print_json(payload)
        return
    print_table(title, ("metric", "value (%)"), ((n, f"{100 * metrics[n]:.2f}") for n in names if n in metrics))
    out.print(f"Run folder: {payload['path']}", highlight=False)


def silence_libraries() -> None:
    """-q: the libraries' own chatter (matplotlib's missing-glyph warnings, its font-cache notes) stays off the
    terminal too; errors still show."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("matplotlib").setLevel(logging.ERROR)


def print_error(message: str, hint: str | None) -> None:
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    if hint:
        err.print(f"[bold]Hint:[/] {escape(hint)}", highlight=False)
