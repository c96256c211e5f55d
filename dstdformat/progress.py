"""One progress helper for the whole package: library code reports, only the CLI decides to show.

Library functions take ``progress: bool = False``; the CLI passes ``not args.quiet``. Nothing below
the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def track(
    items: Iterable[T],
    *,
    enabled: bool,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
) -> Iterator[T]:
    """Iterate ``items``, showing a progress bar on stderr when ``enabled``. Bars stay on screen
    at their final count; ``leave=False`` for inner passes (a rate search's tries) that would
    otherwise fill the terminal."""
    if not enabled:
        yield from items
        return
    with tqdm(items, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True) as bar:
        yield from bar


@contextmanager
def bar(
    *,
    enabled: bool,
    desc: str,
    total: int | None,
    unit: str = "it",
    unit_scale: bool = False,
    leave: bool = True,
):
    """A manual progress bar (``.update(n)``); a no-op object when disabled."""
    if not enabled:
        yield _NullBar()
        return
    with tqdm(
        desc=desc, total=total, unit=unit, unit_scale=unit_scale, leave=leave, dynamic_ncols=True
    ) as real:
        yield real


class _NullBar:
    def update(self, n: int = 1) -> None:  # noqa: D401 - mirrors tqdm
        pass

    def set_postfix_str(self, s: str) -> None:
        pass
