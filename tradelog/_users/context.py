"""The user a piece of work is for: :class:`bind_user`, and what sees it.

``bind_user(7)`` binds ``user_id`` in structlog's context variables for a block, a function or
a coroutine, so that everything inside names user 7 without saying so:

* log events (structlog's ``merge_contextvars``; stdlib records through tradelog's bridge);
* ``track_task(name)``, ``heartbeat()``, ``mark_running()`` / ``mark_stopped()`` without a
  user id (:func:`bound_user_id`);
* exceptions: one that leaves the block is marked with the user (:func:`user_of`), so a crash
  recorded later - by ``threading.excepthook`` after the thread's function has returned, or by
  the asyncio exception handler after the task finished - still belongs to user 7 although
  the binding itself is gone by then. The innermost binding wins.

A plain ``structlog.contextvars.bound_contextvars(user_id=...)`` gives the first two but not
the third: its binding is reset before any crash hook runs.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from structlog.contextvars import bind_contextvars, get_contextvars, reset_contextvars

from tradelog._db.base import USER_ID_MAX

__all__ = ["bind_user", "bound_user_id", "mark_user", "user_of"]

_MARK: Final = "__tradelog_user_id__"
_F = TypeVar("_F", bound=Callable[..., Any])


def _valid(user_id: object) -> int | None:
    if isinstance(user_id, bool):
        return None
    if isinstance(user_id, int):
        return user_id if 0 < user_id <= USER_ID_MAX else None
    if isinstance(user_id, str) and user_id.strip().isdigit() and len(user_id.strip()) < 20:
        value = int(user_id)
        return value if 0 < value <= USER_ID_MAX else None
    return None


def bound_user_id() -> int | None:
    """The ``user_id`` bound in structlog's context variables here, if it is a user id."""
    return _valid(get_contextvars().get("user_id"))


def mark_user(exc: BaseException, user_id: int) -> None:
    """Remember on ``exc`` that it happened for ``user_id`` (an earlier mark is kept)."""
    with contextlib.suppress(Exception):
        if getattr(exc, _MARK, None) is None:
            setattr(exc, _MARK, user_id)


def user_of(exc: BaseException | None) -> int | None:
    """The user an exception was marked with by :class:`bind_user`, or None."""
    if exc is None:
        return None
    try:
        return _valid(getattr(exc, _MARK, None))
    except Exception:
        return None


class bind_user:  # noqa: N801 - used like a function: ``with bind_user(7)``, ``@bind_user(7)``
    """Bind ``user_id`` for a block (``with``/``async with``) or each call of a function or
    coroutine (as a decorator); see the module docstring.

    Raises :class:`ValueError` when ``user_id`` is not a positive integer up to
    ``USER_ID_MAX`` (2,147,483,647: ``users.id`` is an INTEGER).
    """

    def __init__(self, user_id: int) -> None:
        value = _valid(user_id) if not isinstance(user_id, str) else None
        if value is None:
            raise ValueError(
                f"a user id is a positive integer up to {USER_ID_MAX}, got {user_id!r}"
            )
        self.user_id = value
        self._tokens: list[Mapping[str, Token[Any]]] = []

    def __enter__(self) -> int:
        self._tokens.append(bind_contextvars(user_id=self.user_id))
        return self.user_id

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            mark_user(exc, self.user_id)
        tokens = self._tokens.pop()
        with contextlib.suppress(ValueError):  # left in another context: nothing to reset
            reset_contextvars(**tokens)

    async def __aenter__(self) -> int:
        return self.__enter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(kind, exc, tb)

    def __call__(self, fn: _F) -> _F:
        """Decorate ``fn`` (sync or async): each call runs with the user bound."""
        user_id = self.user_id
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with bind_user(user_id):
                    return await fn(*args, **kwargs)

            return cast(_F, run_async)

        @functools.wraps(fn)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            with bind_user(user_id):
                return fn(*args, **kwargs)

        return cast(_F, run_sync)
