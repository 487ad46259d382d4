"""Progress bars (rich) for loops over data, silent unless enabled."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def track(items: Iterable[T], total: int | None, description: str, enabled: bool) -> Iterator[T]:
    """Yield items, showing a progress bar on stderr when enabled."""
    import sys
    if not enabled or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    import sys
    print(f"warning: {message}", file=sys.stderr)
