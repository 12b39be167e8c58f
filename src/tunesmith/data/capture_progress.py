"""The progress bar of `tunesmith data capture`: requests done, tokens so far and the cost estimate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunesmith.console import err_console
from tunesmith.data.capture import CaptureOptions, Tally


@contextmanager
def capture_progress(opts: CaptureOptions) -> Iterator[Callable[[int, Tally], Callable[[], None]]]:
    """A factory for capture()'s ``progress``: given the number of requests to make, the callback after each."""
    with Progress(TextColumn("capture"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), console=err_console, transient=False) as bar:

        def start(total: int, tally: Tally) -> Callable[[], None]:
            task = bar.add_task(_line(tally, opts), total=total)

            def step() -> None:
                bar.update(task, advance=1, description=_line(tally, opts))

            return step

        yield start


def _line(tally: Tally, opts: CaptureOptions) -> str:
    return (f"{tally.cached} from journal, {tally.failed} failed, tokens {tally.prompt_tokens} in / "
            f"{tally.completion_tokens} out, ${tally.cost(opts):.4f}")
