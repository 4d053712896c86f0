"""structlog glue: the bound logger class tradelog configures, and the logger it wraps.

:class:`TradelogBoundLogger` is structlog's filtering bound logger with two differences:

* **the level filter follows reconfiguration.** Methods below the minimum level are a bare
  ``return None`` on the class (as in ``structlog.make_filtering_bound_logger``), but they are
  swapped on the one class when the runtime configures it again (:meth:`~TradelogBoundLogger.
  configure`, called only by :mod:`tradelog._runtime`, the state department), so loggers that
  structlog cached on first use follow the new level too;
* **it never raises into the caller.** Bad ``%`` arguments, keyword names such as ``event`` or
  ``self``, an unknown level number, a failing processor: the event is still handled as well as
  it can be and any internal error is counted, never propagated. Async variants (``ainfo`` ...)
  only enqueue, so they run inline instead of in an executor.

:class:`ConsoleOutput` is the wrapped logger: it writes whatever the processor chain returned
as text to ``sys.stderr`` - nothing for tradelog's own chain, whose console lines are written
by the writer's console thread (:mod:`tradelog._logs.console`). It carries its logger's
name - for ``structlog.get_logger()`` without one, the module that first uses it
(:func:`caller_module`) - and its minimum level (``TRADELOG_LOGGER_LEVELS``), which the bound
logger checks before doing any work.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Protocol

from structlog import DropEvent
from structlog._base import BoundLoggerBase

__all__ = [
    "ConsoleOutput",
    "InternalErrors",
    "TradelogBoundLogger",
    "caller_module",
    "output_factory",
]

_METHODS: Final = (
    (logging.DEBUG, "debug"),
    (logging.INFO, "info"),
    (logging.WARNING, "warning"),
    (logging.ERROR, "error"),
    (logging.CRITICAL, "critical"),
)
_ALIASES: Final = {"warn": "warning", "fatal": "critical", "msg": "info"}
_NUMBERS: Final = {name: number for number, name in _METHODS}
_FRAMEWORK: Final = (
    "structlog",
    "tradelog._logs",
    "tradelog._host",
    "tradelog._runtime",
    "tradelog._facade",
    "logging",
)
"""Modules whose frames are skipped when looking for the module that logs."""


_SKIP_NAMES: Final = frozenset(_FRAMEWORK)
_SKIP_PREFIXES: Final = tuple(f"{name}." for name in _FRAMEWORK)


def caller_module() -> str:
    """The ``__name__`` of the nearest calling module outside structlog, tradelog's logging
    code and :mod:`logging` (``"root"`` when there is none)."""
    try:
        frame = sys._getframe(1)
    except Exception:  # pragma: no cover - no frames (exotic interpreters)
        return "root"
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if (
            name.__class__ is str
            and name not in _SKIP_NAMES
            and not name.startswith(_SKIP_PREFIXES)
        ):
            return str(name)
        frame = frame.f_back  # type: ignore[assignment]
    return "root"


class InternalErrors:
    """Counts failures inside the logging path (``runtime.stats()["internal_errors"]``);
    the first one is printed once to stderr, the others only counted."""

    def __init__(self) -> None:
        self.count = 0
        self.reported = False

    def __call__(self, exc: BaseException) -> None:
        self.count += 1
        if not self.reported:
            self.reported = True
            with contextlib.suppress(Exception):
                sys.__stderr__.write(  # type: ignore[union-attr]
                    f"tradelog: an event could not be logged ({type(exc).__name__}: {exc}); "
                    "further failures are only counted\n"
                )


class ConsoleOutput:
    """The logger structlog wraps: prints rendered lines to ``sys.stderr`` (looked up per call,
    so test capture and redirection work). ``min_level``: events below it are not handled."""

    __slots__ = ("generation", "min_level", "name")

    def __init__(self, name: str | None = None) -> None:
        self.name = name
        self.min_level = logging.NOTSET
        self.generation = -1
        """The configuration ``min_level`` was looked up for (see TradelogBoundLogger)."""

    def __repr__(self) -> str:
        return f"<ConsoleOutput {self.name!r}>"

    def msg(self, *args: Any, **kw: Any) -> None:
        if args and args[0]:
            text = args[0]
            if isinstance(text, bytes | bytearray):
                text = bytes(text).decode("utf-8", "replace")
            with contextlib.suppress(Exception):
                stream = sys.stderr
                stream.write(f"{text}\n")
                stream.flush()

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


def output_factory(*args: Any) -> ConsoleOutput:
    """structlog logger factory: ``structlog.get_logger("name")`` names the logger; without a
    name it is the module that uses it first."""
    name = args[0] if args else None
    return ConsoleOutput(caller_module() if name is None else str(name))


def _interpolate(event: Any, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...] | None]:
    """``event % args`` like structlog; on failure keep the event and return the args."""
    try:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            return event % args[0], None
        return event % args, None
    except Exception:
        return event, args


def _nop(self: Any, /, *args: Any, **kw: Any) -> None:
    return None


async def _anop(self: Any, /, *args: Any, **kw: Any) -> None:
    return None


def _make(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    number = _NUMBERS[name]

    def method(self: TradelogBoundLogger, /, *args: Any, **kw: Any) -> Any:
        return self._emit(name, number, args, kw)

    async def amethod(self: TradelogBoundLogger, /, *args: Any, **kw: Any) -> Any:
        return self._emit(name, number, args, kw)

    method.__name__ = name
    amethod.__name__ = f"a{name}"
    return method, amethod


_ACTIVE: Final = {name: _make(name) for _, name in _METHODS}


class LevelLookup(Protocol):
    """A logger's minimum level by its name (:class:`~tradelog._logs.levels.LoggerLevels`)."""

    def __call__(self, name: str | None, /) -> int: ...


class _Everything:
    def __call__(self, name: str | None, /) -> int:
        return logging.NOTSET


class TradelogBoundLogger(BoundLoggerBase):
    """A structlog bound logger with a reconfigurable level filter that never raises."""

    _min_level: ClassVar[int] = logging.NOTSET
    _internal_errors: ClassVar[InternalErrors] = InternalErrors()
    _levels: ClassVar[LevelLookup] = _Everything()
    _generation: ClassVar[int] = 0

    def _emit(
        self, method_name: str, number: int, args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        try:
            output = self._logger
            if output.__class__ is ConsoleOutput:
                if output.generation != self._generation:
                    output.min_level = self._levels(output.name)
                    output.generation = self._generation
                if number < output.min_level:
                    return None
            if args:
                event = args[0]
                if len(args) > 1:
                    event, leftover = _interpolate(event, args[1:])
                    if leftover is not None:
                        kw["positional_args"] = leftover
            else:
                event = kw.pop("event", None)
            event_dict: Any = self._context.copy()
            event_dict.update(kw)
            if event is not None:
                event_dict["event"] = event
            logger = self._logger
            for processor in self._processors:
                event_dict = processor(logger, method_name, event_dict)
            if event_dict.__class__ is str:
                return getattr(logger, method_name)(event_dict) if event_dict else None
            if isinstance(event_dict, dict):
                return getattr(logger, method_name)(**event_dict)
            if isinstance(event_dict, tuple):
                positional, keywords = event_dict
                return getattr(logger, method_name)(*positional, **keywords)
            return getattr(logger, method_name)(event_dict)
        except DropEvent:
            return None
        except Exception as exc:
            self._internal_errors(exc)
            return None

    def bind(self, /, **new_values: Any) -> TradelogBoundLogger:
        """A new logger with ``new_values`` added to the context (any key, even ``self``)."""
        context = self._context.__class__(self._context)
        context.update(new_values)
        return self.__class__(self._logger, self._processors, context)

    def new(self, /, **new_values: Any) -> TradelogBoundLogger:
        """A new logger with only ``new_values`` as its context."""
        return self.__class__(self._logger, self._processors, self._context.__class__(new_values))

    def exception(self, /, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(*args, **kw)

    async def aexception(self, /, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self.error(*args, **kw)

    def log(self, level: Any, /, *args: Any, **kw: Any) -> Any:
        try:
            number = int(level)
        except Exception:
            number = logging.INFO
        if number < self._min_level:
            return None
        name, threshold = "debug", logging.DEBUG
        for candidate_threshold, candidate in _METHODS:
            if candidate_threshold <= number:
                name, threshold = candidate, candidate_threshold
        return self._emit(name, threshold, args, kw)

    async def alog(self, level: Any, /, *args: Any, **kw: Any) -> Any:
        return self.log(level, *args, **kw)

    def is_enabled_for(self, level: int) -> bool:
        return level >= self._min_level

    def get_effective_level(self) -> int:
        return self._min_level

    # Level methods are installed by configure() below.
    debug = info = warning = warn = error = critical = fatal = msg = _ACTIVE["info"][0]
    adebug = ainfo = awarning = awarn = aerror = acritical = afatal = amsg = _ACTIVE["info"][1]

    @classmethod
    def configure(
        cls,
        level: int,
        internal_errors: InternalErrors | None = None,
        levels: LevelLookup | None = None,
    ) -> None:
        """Make the methods below ``level`` no-ops (and the others live) for every instance,
        count internal failures in ``internal_errors``, and take each logger's own minimum
        from ``levels(name)`` (looked up again by loggers cached before this call)."""
        cls._min_level = level
        cls._internal_errors = internal_errors or InternalErrors()
        cls._levels = levels or _Everything()
        cls._generation += 1
        for threshold, name in _METHODS:
            method, amethod = (_nop, _anop) if threshold < level else _ACTIVE[name]
            setattr(cls, name, method)
            setattr(cls, f"a{name}", amethod)
        for alias, target in _ALIASES.items():
            setattr(cls, alias, getattr(cls, target))
            setattr(cls, f"a{alias}", getattr(cls, f"a{target}"))


TradelogBoundLogger.configure(logging.NOTSET)
