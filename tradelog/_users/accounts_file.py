"""Reading an accounts file for ``tradelog users sync``: CSV, a JSON array or JSON lines.

CSV needs a header with ``id`` and may have ``email``, ``name`` and ``role``; JSON items are
objects with the same keys. Every line is checked before anything is written: the result is
either the accounts or the list of what is wrong, each with its line (CSV, JSON lines) or item
number (JSON array).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Final

from tradelog._users.store import UserSpec

__all__ = ["AccountsFile", "parse_accounts"]

_FIELDS: Final = ("id", "email", "name", "role")


@dataclass
class AccountsFile:
    """The accounts a file names, and the problems found in it (``where: what``)."""

    accounts: list[UserSpec] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _spec(item: Any, where: str, found: AccountsFile) -> None:
    if not isinstance(item, dict):
        found.problems.append(f"{where}: expected an object with id, email, name, role")
        return
    unknown = sorted(set(item) - set(_FIELDS))
    if unknown:
        found.problems.append(f"{where}: unknown field(s) {', '.join(unknown)}")
        return
    raw_id = item.get("id")
    try:
        user_id = int(str(raw_id).strip()) if not isinstance(raw_id, bool) else None
    except ValueError:
        user_id = None
    if user_id is None:
        found.problems.append(f"{where}: id {raw_id!r} is not a whole number")
        return
    values = {k: (str(v).strip() or None) if v is not None else None for k, v in item.items()}
    try:
        found.accounts.append(
            UserSpec(
                user_id,
                email=values.get("email"),
                name=values.get("name"),
                role=values.get("role") or "user",
            )
        )
    except ValueError as exc:
        found.problems.append(f"{where}: {exc}")


def parse_accounts(text: str, *, name: str = "") -> AccountsFile:
    """Parse an accounts file (``name`` picks the format by suffix; else by content)."""
    found = AccountsFile()
    stripped = text.lstrip()
    if name.endswith(".jsonl") or (stripped.startswith("{") and not name.endswith(".csv")):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                found.problems.append(f"line {number}: not JSON ({exc.msg})")
                continue
            _spec(item, f"line {number}", found)
    elif name.endswith(".json") or stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            found.problems.append(f"line {exc.lineno}: not JSON ({exc.msg})")
            return found
        if not isinstance(items, list):
            found.problems.append("the file must hold a JSON array of accounts")
            return found
        for number, item in enumerate(items, start=1):
            _spec(item, f"item {number}", found)
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in reader.fieldnames or []]
        if "id" not in header:
            found.problems.append("line 1: the CSV header must name an id column")
            return found
        reader.fieldnames = header
        for row in reader:
            extra = row.pop(None, None)
            where = f"line {reader.line_num}"
            if extra:
                found.problems.append(f"{where}: more values than header columns")
                continue
            _spec(row, where, found)
    seen: dict[int, int] = {}
    for account in found.accounts:
        seen[account.id] = seen.get(account.id, 0) + 1
    repeated = sorted(user_id for user_id, count in seen.items() if count > 1)
    if repeated:
        found.problems.append(f"ids named more than once: {', '.join(map(str, repeated))}")
    return found
