"""Error fingerprints: one stable hash per kind of error, so occurrences group together.

A fingerprint hashes the exception's qualified class name and the *normalised in-app frames*
of its traceback: for every frame, the module name, the function's qualified name and the text
of the source line being run (whitespace collapsed). Line numbers, file paths and message values
are left out, so the same bug keeps its fingerprint when code above it shifts, when it runs from
another checkout, or when the message carries an order id; two different calls failing in the
same function are told apart by their source lines. Frames whose source cannot be read
contribute module and function only.

In-app frames are picked in tiers, the first non-empty one wins:

1. frames outside the standard library, installed packages (``site-packages``/``dist-packages``)
   and tradelog itself;
2. frames outside the standard library and tradelog (a service installed as a package);
3. every frame.

Consecutive repeats of a frame are collapsed (a recursion error from depth 900 and from depth 1000
groups together), and every exception of the ``__cause__``/``__context__`` chain contributes its
own type and frames, in the order :func:`traceback.format_exception` prints them.

An exception's traceback grows while it propagates (each frame it leaves is added at the
outer end), so the capture passes the traceback as it was when the exception was captured
(``tb``): a record built later on the writer thread then hashes the same frames, whatever the
exception went through meanwhile.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import sysconfig
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Final

__all__ = ["exception_chain", "fingerprint", "frame_signature", "in_app_tier", "qualified_name"]

_BUILTIN_MODULES: Final = frozenset({"builtins", "__builtin__", "exceptions"})
_MAX_CHAIN: Final = 16
_MAX_FRAMES: Final = 64
_PACKAGE_DIRS: Final = ("site-packages", "dist-packages")


def qualified_name(kind: type[BaseException]) -> str:
    """``module.QualName`` of an exception class; built-ins stay short (``ValueError``)."""
    module = getattr(kind, "__module__", None) or ""
    name = getattr(kind, "__qualname__", None) or kind.__name__
    return name if module in _BUILTIN_MODULES else f"{module}.{name}"


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, first-raised first.

    Follows the same rules as :func:`traceback.format_exception`: ``__cause__`` when set,
    otherwise ``__context__`` unless ``__suppress_context__``; cycles are cut.
    """
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < _MAX_CHAIN:
        seen.add(id(current))
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif current.__suppress_context__:
            current = None
        else:
            current = current.__context__
    chain.reverse()
    return chain


@lru_cache(maxsize=1)
def _excluded_roots() -> tuple[tuple[str, ...], str]:
    stdlib = {
        os.path.normcase(os.path.realpath(path))
        for key in ("stdlib", "platstdlib")
        if (path := sysconfig.get_paths().get(key))
    }
    tradelog_root = os.path.normcase(os.path.realpath(Path(__file__).resolve().parents[1]))
    return tuple(sorted(stdlib)), tradelog_root + os.sep


@lru_cache(maxsize=4096)
def in_app_tier(filename: str) -> int:
    """How strongly a frame's file belongs to the host application.

    2: application code; 1: an installed package; 0: the standard library, tradelog itself or
    a synthetic file (``<frozen ...>``, ``<string>`` is application code).
    """
    if filename.startswith("<frozen "):
        return 0
    normalized = os.path.normcase(os.path.realpath(filename)) if os.sep in filename else filename
    stdlib_roots, tradelog_root = _excluded_roots()
    if normalized.startswith(tradelog_root):
        return 0
    parts = normalized.split(os.sep)
    if any(part in _PACKAGE_DIRS for part in parts):
        return 1
    if any(normalized.startswith(root + os.sep) for root in stdlib_roots):
        return 0
    return 2


def _source_line(filename: str, lineno: int | None, module_globals: dict[str, Any]) -> str:
    if not lineno:
        return ""
    try:
        return " ".join(linecache.getline(filename, lineno, module_globals).split())
    except Exception:
        return ""


def _frames(tb: TracebackType | None) -> Iterator[tuple[str, str, str, str]]:
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        module = frame.f_globals.get("__name__")
        if not isinstance(module, str):
            module = Path(code.co_filename).stem
        line = _source_line(code.co_filename, tb.tb_lineno, frame.f_globals)
        yield code.co_filename, module, getattr(code, "co_qualname", code.co_name), line
        tb = tb.tb_next


def frame_signature(tb: TracebackType | None) -> list[str]:
    """The ``module:function:source line`` entries of the in-app frames of ``tb``, outermost
    first."""
    frames = list(_frames(tb))
    if not frames:
        return []
    tiers = [in_app_tier(filename) for filename, _, _, _ in frames]
    floor = max(tiers)
    entries: list[str] = []
    for (_, module, function, line), tier in zip(frames, tiers, strict=True):
        if tier < floor:
            continue
        entry = f"{module}:{function}:{line}"
        if not entries or entries[-1] != entry:
            entries.append(entry)
    return entries[-_MAX_FRAMES:]


def fingerprint(exc: BaseException, tb: TracebackType | None = None) -> str:
    """The 64-character hex fingerprint of ``exc`` (sha256; fits ``error_logs.fingerprint``);
    ``tb`` stands for ``exc``'s own traceback when given (see the module docstring)."""
    digest = hashlib.sha256()
    for link in exception_chain(exc):
        digest.update(qualified_name(type(link)).encode())
        digest.update(b"\n")
        frames = tb if link is exc and tb is not None else link.__traceback__
        for entry in frame_signature(frames):
            digest.update(entry.encode("utf-8", "surrogatepass"))
            digest.update(b"\n")
        digest.update(b"--\n")
    return digest.hexdigest()
