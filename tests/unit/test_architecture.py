"""The package's shape: no import cycle, every module importable first, an explicit public API.

The import graph is built from the source: module-level and function-level ``import`` and
``from ... import`` statements and ``importlib.import_module("...")`` strings. An edge to a
package means its ``__init__``; the implicit import of parent packages is not an edge (every
module would otherwise depend on ``tradelog/__init__.py``).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import tradelog

PACKAGE = Path(tradelog.__file__).resolve().parent

PUBLIC: dict[str, list[str]] = {
    "tradelog": [
        "ConfigurationError",
        "ConflictError",
        "DeliveryError",
        "Handler",
        "MissingExtraError",
        "NotFound",
        "NotifyResult",
        "PermanentDeliveryError",
        "PermissionDenied",
        "RetryableDeliveryError",
        "Runtime",
        "Secret",
        "Settings",
        "StorageError",
        "TradelogError",
        "__version__",
        "anotify",
        "audit",
        "bind_user",
        "capture_exception",
        "config",
        "configure",
        "current",
        "db",
        "ensure_user",
        "ensure_users",
        "errors",
        "exceptions",
        "flush",
        "get_logger",
        "guard",
        "health",
        "heartbeat",
        "install_loop_handler",
        "logs",
        "mark_running",
        "mark_stopped",
        "ml",
        "notifications",
        "notify",
        "processor",
        "retention",
        "session",
        "shutdown",
        "skip",
        "track_task",
        "trading_config",
        "users",
    ],
    "tradelog.asgi": ["TradelogMiddleware", "UserResolver"],
    "tradelog.audit": [
        "AuditPage",
        "RequestInfo",
        "current_request",
        "diff",
        "list_audit",
        "query_audit",
        "record_audit",
        "request_context",
    ],
    "tradelog.config": [
        "ENV_PREFIX",
        "LEVELS",
        "LOG_WRITER_MODES",
        "SCHEMA_CHECK_MODES",
        "SMTP_SECURITY_MODES",
        "UNKNOWN_USER_MODES",
        "Secret",
        "Settings",
    ],
    "tradelog.db": ["check", "current_revision", "downgrade", "head", "session", "upgrade"],
    "tradelog.errors": [
        "ErrorGroup",
        "ErrorPage",
        "capture_exception",
        "error_groups",
        "expand_fingerprint",
        "get_error",
        "guard",
        "ignore_group",
        "install_loop_handler",
        "list_errors",
        "purge_resolved",
        "reopen_group",
        "resolve",
        "resolved_cutoff",
    ],
    "tradelog.exceptions": [
        "ConfigurationError",
        "ConflictError",
        "DeliveryError",
        "MissingExtraError",
        "NotFound",
        "PermanentDeliveryError",
        "PermissionDenied",
        "RetryableDeliveryError",
        "StorageError",
        "TradelogError",
    ],
    "tradelog.health": [
        "TASK_STATUSES",
        "ServiceHealth",
        "TaskRun",
        "TaskSkipped",
        "current_task",
        "heartbeat",
        "is_stale",
        "mark_running",
        "mark_stopped",
        "service_overview",
        "skip",
        "stale_services",
        "track_task",
    ],
    "tradelog.logs": [
        "Cursor",
        "LogEntry",
        "LogFilter",
        "LogPage",
        "follow_logs",
        "parse_moment",
        "query_logs",
    ],
    "tradelog.ml": [
        "JOB_STATUSES",
        "LOGS_LENGTH",
        "activate",
        "active_model",
        "complete_job",
        "deactivate",
        "effective_model",
        "fail_job",
        "get_job",
        "keep_tail",
        "list_jobs",
        "list_models",
        "mark_running",
        "register_model",
        "start_job",
    ],
    "tradelog.notifications": [
        "EDITABLE_FIELDS",
        "Channel",
        "ChannelOutcome",
        "NotifyResult",
        "OutgoingMessage",
        "Page",
        "SendReceipt",
        "anotify",
        "get_preferences",
        "list_notifications",
        "mark_all_read",
        "mark_read",
        "notify",
        "preferences_dict",
        "unread_count",
        "update_preferences",
    ],
    "tradelog.retention": [
        "DEFAULT_BATCH_SIZE",
        "DEFAULT_DAILY_AT",
        "DEFAULT_PARTITIONS_AHEAD",
        "LOG_FILE_PATTERN",
        "ROW_CATEGORIES",
        "DailyRetention",
        "Progress",
        "RetentionJob",
        "RetentionPolicy",
        "RetentionResult",
        "log_file_date",
        "next_daily_run",
    ],
    "tradelog.testing": [
        "FrozenClock",
        "RecordingChannel",
        "SentMessage",
        "capture_logs",
        "configure_for_tests",
        "drain",
        "recording_channels",
        "reset",
    ],
    "tradelog.trading_config": [
        "FIELDS",
        "RESOURCE_TYPE",
        "FieldSpec",
        "as_dict",
        "get_config",
        "parse_value",
        "update_config",
        "validate_changes",
    ],
    "tradelog.users": [
        "PLACEHOLDER_DOMAIN",
        "SYSTEM_USER_EMAIL",
        "Actor",
        "ActorLike",
        "EnsureResult",
        "UserSpec",
        "create_user",
        "ensure_system_user",
        "ensure_user",
        "ensure_users",
        "is_placeholder",
        "list_users",
        "resolve_actor",
        "system_user_id",
    ],
    "tradelog.web": ["TradelogRouter", "create_app", "create_router"],
}
"""Each public module's ``__all__``: adding or removing a name is a deliberate change here."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {
    _module_name(path): path
    for path in sorted(PACKAGE.rglob("*.py"))
    if "migrations" not in path.relative_to(PACKAGE).parts
}


def _resolve(name: str) -> str | None:
    """The tradelog module ``name`` stands for, or None when it is not one of ours."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    edges = set()
    for name in found:
        if not name.startswith("tradelog"):
            continue
        if name in MODULES:
            edges.add(name)
        elif (target := _resolve(name)) is not None and target != "tradelog":
            edges.add(target)
        elif name.rpartition(".")[0] == "tradelog" and name not in MODULES:
            edges.add("tradelog")  # ``from tradelog import name``: the package's __init__
    edges.discard(module)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    """No module reaches, directly or through others, back to itself."""
    graph = {module: _imports(module, path) for module, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_graph_builder_sees_a_cycle() -> None:
    """The cycle finder is not vacuous: it reports a planted cycle and only that one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_private_modules_never_import_the_public_package() -> None:
    """Nothing below the public surface reaches up into ``tradelog/__init__``."""
    offenders = [
        module
        for module, path in MODULES.items()
        if module != "tradelog" and "tradelog" in _imports(module, path)
    ]
    assert offenders == []


_FIRST_IMPORT = """
import importlib, sys, types

package_dir = sys.argv[1]
failed = []
for name in sys.argv[2:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "tradelog"]:
        del sys.modules[loaded]
    # A bare package object: tradelog/__init__.py (which imports every public module in its
    # own order) does not run first, so each module loads with only what it imports itself.
    stub = types.ModuleType("tradelog")
    stub.__path__ = [package_dir]
    sys.modules["tradelog"] = stub
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print("\\n".join(failed))
"""


@pytest.mark.slow
def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """Each module loads as the first tradelog module of a process, in its own import order,
    without ``tradelog/__init__.py`` having run before it (the package imported plainly)."""
    modules = [m for m in MODULES if m != "tradelog" and not m.endswith("__main__")]
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_IMPORT, str(PACKAGE), *modules],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_modules_lock_their_names(module: str) -> None:
    """Each public module exports exactly its locked list, every name present."""
    loaded = importlib.import_module(module)
    assert loaded.__all__ == PUBLIC[module]
    for name in loaded.__all__:
        assert hasattr(loaded, name), name


def test_everything_else_is_private() -> None:
    """A module is public only when it is listed above; the rest start with an underscore
    (or live in a package that does)."""
    public = set(PUBLIC) | {"tradelog.__main__"}
    unlisted = [
        module
        for module in MODULES
        if module not in public and not any(part.startswith("_") for part in module.split(".")[1:])
    ]
    assert unlisted == []


def test_the_notification_package_does_not_shadow_notify() -> None:
    """``tradelog.notify`` is the function; the notification package is reachable by name."""
    assert callable(tradelog.notify)
    assert tradelog.notifications.notify is tradelog.notify
    assert importlib.import_module("tradelog._notify").__name__ == "tradelog._notify"
