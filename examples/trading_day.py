"""A simulated NSE trading day for three users and their operator, recorded by tradelog on
embedded SQLite.

Run it with ``make demo`` (or ``.venv/bin/python examples/trading_day.py``). It takes a few
seconds and leaves everything it wrote in ``./.tradelog/`` (``--dir`` to choose another place):

* ``demo.db``: a SQLite database with ``service_logs``, ``error_logs`` and ``error_groups``,
  ``service_status``, ``service_task_execution``, ``notifications`` and their deliveries,
  ``audit_logs``;
* ``logs/users/<id>/service-YYYY-MM-DD.jsonl``: one JSON line per event, per user.

The day, for Asha, Ravi and Meera (one thread each, as a multi-user service runs them), with
Dev as the operator (an admin) who runs the service for them:

====== =============================================================================
09:00  each service starts (``mark_running``: a "Service started" notice to its owner)
09:05  pre-market retry of yesterday's rejected AMO orders (one transient broker error);
       the summary goes to the in-app inbox only (``notify(..., channels=("in_app",))``)
09:15  market open: AMO fills, then the sell monitor watches targets until 15:30;
       Ravi's broker connection drops mid-day: the task fails, Ravi is told in one plain
       sentence and Dev gets the error's detail; Ravi's service then hangs (no heartbeat)
15:35  end of day: P&L summary (Asha's report trips over a zero and logs the exception)
16:05  AMO buy orders for tomorrow from the day's RSI signals, with order ids
16:10  Asha's and Meera's services stop (``mark_stopped``)
====== =============================================================================

Then the demo's clock jumps three hours: Meera's quiet hours are over, so what they held goes
out as one digest per channel, and Ravi's silent service is reported stale to Dev and to Ravi.

Notifications travel the whole way: a ``notifications`` row (the in-app inbox) and one outbox
delivery per external channel, sent by the delivery worker, which sets ``telegram_sent`` /
``email_sent``. With ``TRADELOG_TELEGRAM_BOT_TOKEN`` + ``DEMO_TELEGRAM_CHAT_ID`` and/or
``TRADELOG_SMTP_HOST`` + ``DEMO_EMAIL_TO`` set they go to that Telegram chat and mailbox. With
neither, they go to the *recording channels* of :mod:`tradelog.testing`, which keep the
messages exactly as Telegram and e-mail would receive them and send nothing off this machine;
the demo prints what they recorded.

Log rows carry real UTC timestamps; the simulated market time is in each event's ``sim_time``.
The demo ends with the CLI commands to read what it wrote, and the ``tradelog serve`` command
and URL that open the same database in a browser (the error console, logs, the inbox).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

import tradelog
from tradelog import testing
from tradelog.notifications import update_preferences
from tradelog.trading_config import as_dict, get_config, update_config
from tradelog.users import create_user

IST = ZoneInfo("Asia/Kolkata")
TABLES = (
    "users",
    "user_trading_config",
    "service_status",
    "service_task_execution",
    "service_stale_episodes",
    "service_logs",
    "error_logs",
    "error_groups",
    "notifications",
    "notification_deliveries",
    "audit_logs",
)


# --------------------------------------------------------------------------- the simulated world


class BrokerError(Exception):
    """The broker API refused or failed a request."""


class BrokerTimeout(BrokerError):
    """The broker did not answer in time (transient)."""


@dataclass
class Trader:
    """One account of the trading service."""

    name: str
    email: str
    symbols: list[str]
    user_id: int = 0
    chat: str = ""
    role: str = "user"
    quiet: bool = False
    broker_drops_at: str | None = None
    report_bug: bool = False
    hangs: bool = False
    orders: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


TRADERS = [
    Trader("Asha", "asha@example.com", ["RELIANCE", "TCS", "INFY"], chat="1001", report_bug=True),
    Trader(
        "Ravi",
        "ravi@example.com",
        ["HDFCBANK", "ICICIBANK", "SBIN"],
        chat="1002",
        broker_drops_at="13:40",
        hangs=True,
    ),
    Trader("Meera", "meera@example.com", ["TATAMOTORS", "ITC", "LT"], chat="1003", quiet=True),
]
OPERATOR = Trader("Dev", "dev@example.com", [], chat="9000", role="admin")
"""The operator: an admin, so errors and stale services are reported to him in detail."""


class DemoClock:
    """The clock tradelog is given: real time, plus however far the demo has jumped ahead.

    Heartbeats, task rows, error rows and the delivery worker read it, so jumping it past
    Meera's quiet hours releases what they held, and past the stale threshold makes Ravi's
    silent service stale, without waiting three hours.
    """

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def jump(self, delta: timedelta) -> None:
        self.ahead += delta


PRICES = {
    "RELIANCE": 2950.0,
    "TCS": 3890.0,
    "INFY": 1520.0,
    "HDFCBANK": 1660.0,
    "ICICIBANK": 1105.0,
    "SBIN": 815.0,
    "TATAMOTORS": 985.0,
    "ITC": 431.0,
    "LT": 3620.0,
}


class Broker:
    """A deterministic stand-in for a broker API (prices, orders, occasional failures)."""

    def __init__(self, trader: Trader, seed: int) -> None:
        self.trader = trader
        self.random = random.Random(seed)
        self.sequence = 0
        self.calls = 0

    def order_id(self, kind: str) -> str:
        self.sequence += 1
        return f"{kind}-{datetime.now(IST):%y%m%d}-{self.trader.user_id:02d}{self.sequence:03d}"

    def price(self, symbol: str, minute: int) -> float:
        drift = 1 + 0.00004 * minute * (1 if len(symbol) % 2 else 0.55)
        return round(PRICES[symbol] * drift * (1 + self.random.uniform(-0.003, 0.003)), 2)

    def place(self, symbol: str, quantity: int, *, first_try_fails: bool = False) -> str:
        self.calls += 1
        if first_try_fails and self.calls == 1:
            raise BrokerTimeout("broker gateway timeout (HTTP 504) on place_order")
        return self.order_id("AMO")

    def quote(self, symbol: str, minute: int, sim_time: str) -> float:
        if self.trader.broker_drops_at and sim_time >= self.trader.broker_drops_at:
            raise BrokerError(
                f"connection reset by broker while streaming {symbol} quotes (session expired)"
            )
        return self.price(symbol, minute)


def sim_minutes(start: str, end: str, step: int) -> list[tuple[str, int]]:
    """Simulated clock readings ``HH:MM`` from ``start`` to ``end`` and minutes since 09:15."""
    h, m = map(int, start.split(":"))
    eh, em = map(int, end.split(":"))
    out = []
    for minute in range(h * 60 + m, eh * 60 + em + 1, step):
        out.append((f"{minute // 60:02d}:{minute % 60:02d}", minute - (9 * 60 + 15)))
    return out


class Market:
    """The simulated clock every trader follows: the main thread advances it step by step."""

    def __init__(self, start: str = "09:00", end: str = "16:10", step: int = 5) -> None:
        self.readings = [t for t, _ in sim_minutes(start, end, step)]
        self.now = self.readings[0]
        self.changed = threading.Condition()

    def wait_until(self, sim_time: str) -> None:
        """Block the calling trader until the market clock reads ``sim_time``."""
        with self.changed:
            self.changed.wait_for(lambda: self.now >= sim_time)

    def run(self, pace: float) -> None:
        """Advance the clock, one reading every ``pace`` seconds."""
        for reading in self.readings[1:]:
            time.sleep(pace)
            with self.changed:
                self.now = reading
                self.changed.notify_all()


# --------------------------------------------------------------------------- one user's day


class Day:
    """Runs one trader's day through tradelog's public API."""

    def __init__(
        self, trader: Trader, engine: Engine, market: Market, say: Callable[[str, str, str], None]
    ) -> None:
        self.t = trader
        self.engine = engine
        self.market = market
        self.uid = trader.user_id
        self.say = say
        self.broker = Broker(trader, seed=trader.user_id)
        self.log = tradelog.get_logger("trading", user_id=self.uid)
        self.holdings: dict[str, tuple[int, float]] = {}
        self.realised = 0.0

    def at(self, sim_time: str) -> None:
        """Wait for the market clock, then tell tradelog the service is alive."""
        self.market.wait_until(sim_time)
        tradelog.heartbeat(self.uid)

    def run(self) -> None:
        tradelog.mark_running(self.uid)
        self.log.info("service started", sim_time="09:00", symbols=self.t.symbols)
        self.at("09:05")
        self.premarket_retry()
        try:
            self.sell_monitor()
        except BrokerError:
            self.log.warning("sell monitor stopped until reconnect", sim_time="13:40")
            self.say(self.t.name, "13:40", "sell monitor FAILED: broker connection lost (captured)")
        self.at("15:35")
        self.end_of_day()
        self.at("16:05")
        self.place_amo_orders()
        self.at("16:10")
        if self.t.hangs:
            self.log.warning("shutdown hangs on the broker socket", sim_time="16:10")
            self.say(self.t.name, "16:10", "shutdown hangs: the service sends no more heartbeats")
            return
        self.log.info("service stopping", sim_time="16:10")
        tradelog.mark_stopped(self.uid)

    # 09:05 ----------------------------------------------------------------------------------
    def premarket_retry(self) -> None:
        log = self.log.bind(task="premarket_retry", sim_time="09:05")
        with tradelog.track_task(self.uid, "premarket_retry") as task:
            rejected = self.t.symbols[:2]
            log.info("retrying rejected AMO orders", count=len(rejected), symbols=rejected)
            placed = []
            for symbol in rejected:
                quantity = 10 if PRICES[symbol] > 2000 else 25
                for attempt in (1, 2, 3):
                    try:
                        order_id = self.broker.place(
                            symbol, quantity, first_try_fails=self.t.name == "Asha"
                        )
                    except BrokerTimeout as exc:
                        log.warning(
                            "AMO retry failed, backing off",
                            symbol=symbol,
                            attempt=attempt,
                            error=str(exc),
                        )
                        continue
                    log.info("AMO order re-placed", symbol=symbol, qty=quantity, order_id=order_id)
                    placed.append(order_id)
                    self.holdings[symbol] = (quantity, PRICES[symbol])
                    break
            task["retried"] = len(rejected)
            task["placed"] = placed
            self.t.orders.extend(placed)
        self.say(self.t.name, "09:05", f"pre-market retry: {len(placed)} AMO orders re-placed")
        self.notify(
            "trading",
            "info",
            "Pre-market retry done",
            f"Re-placed {len(placed)} AMO orders: {', '.join(placed)}",
            dedupe=f"premarket:{datetime.now(IST):%Y-%m-%d}",
            channels=("in_app",),  # a summary for the inbox; no Telegram or e-mail
        )

    # 09:15-15:30 ----------------------------------------------------------------------------
    def sell_monitor(self) -> None:
        config = self.config()
        target = config["default_target_pct"]
        self.at("09:15")
        for (symbol, (quantity, cost)), order_id in zip(
            self.holdings.items(), self.t.orders, strict=False
        ):
            self.log.info(
                "AMO order filled at open",
                sim_time="09:15",
                symbol=symbol,
                qty=quantity,
                avg_price=cost,
                order_id=order_id,
            )
        with tradelog.track_task(self.uid, "sell_monitor") as task:
            sold: list[str] = []
            for sim_time, minute in sim_minutes("09:15", "15:30", 25):
                self.at(sim_time)
                log = self.log.bind(task="sell_monitor", sim_time=sim_time)
                quotes = {s: self.broker.quote(s, minute, sim_time) for s in self.t.symbols}
                log.info("watching", quotes=quotes, open_positions=len(self.holdings))
                for symbol, (quantity, cost) in list(self.holdings.items()):
                    price = quotes[symbol]
                    change = (price - cost) / cost
                    log.debug("quote", symbol=symbol, ltp=price, change_pct=round(change * 100, 2))
                    if change >= target / 10:  # demo markets move fast
                        order_id = self.broker.order_id("SELL")
                        pnl = round((price - cost) * quantity, 2)
                        self.realised += pnl
                        del self.holdings[symbol]
                        sold.append(order_id)
                        log.info(
                            "target hit, sell order placed",
                            symbol=symbol,
                            qty=quantity,
                            ltp=price,
                            order_id=order_id,
                            pnl=pnl,
                        )
                        self.say(
                            self.t.name, sim_time, f"sold {symbol} ({order_id}) pnl {pnl:+.2f}"
                        )
                        self.notify(
                            "trading",
                            "info",
                            f"Sold {symbol}",
                            f"{quantity} x {symbol} at {price:.2f} (order {order_id}), "
                            f"P&L {pnl:+.2f}",
                            dedupe=f"sell:{order_id}",
                        )
                task["ticks"] = task.get("ticks", 0) + 1
                task["sold"] = sold

    # 15:35 ----------------------------------------------------------------------------------
    def end_of_day(self) -> None:
        log = self.log.bind(task="end_of_day", sim_time="15:35")
        with tradelog.track_task(self.uid, "end_of_day") as task:
            open_positions = len(self.holdings)
            task["open_positions"] = open_positions
            task["realised_pnl"] = round(self.realised, 2)
            log.info(
                "end of day", realised_pnl=round(self.realised, 2), open_positions=open_positions
            )
            if self.t.report_bug:
                losing_trades = 0
                try:
                    profit_factor = self.realised / losing_trades  # the bug: no losing trades
                    log.info("report", profit_factor=profit_factor)
                except ZeroDivisionError:
                    log.exception("daily report failed, sending the summary without ratios")
                    self.say(self.t.name, "15:35", "report bug logged with log.exception")
            if self.t.quiet:
                self.notify(
                    "trading",
                    "critical",
                    "Margin shortfall",
                    "Available margin is below tomorrow's AMO value: add funds before 09:00.",
                )
        self.say(self.t.name, "15:35", f"end of day: realised P&L {self.realised:+.2f}")
        self.notify(
            "service",
            "info",
            "Day summary",
            f"Realised P&L {self.realised:+.2f}; {len(self.holdings)} positions open.",
        )

    # 16:05 ----------------------------------------------------------------------------------
    def place_amo_orders(self) -> None:
        log = self.log.bind(task="place_amo_orders", sim_time="16:05")
        config = self.config()
        with tradelog.track_task(self.uid, "place_amo_orders") as task:
            budget = config["user_capital"] / config["max_portfolio_size"]
            placed = []
            for symbol in self.t.symbols:
                rsi = round(self.broker.random.uniform(18, 45), 1)
                if rsi >= config["rsi_oversold"]:
                    log.debug("no signal", symbol=symbol, rsi=rsi)
                    continue
                quantity = max(1, int(budget // PRICES[symbol]))
                order_id = self.broker.place(symbol, quantity)
                placed.append(order_id)
                log.info(
                    "AMO buy order placed",
                    symbol=symbol,
                    rsi=rsi,
                    qty=quantity,
                    order_id=order_id,
                    exchange=config["default_exchange"],
                    product=config["default_product"],
                    variety=config["default_variety"],
                )
            if not placed:
                task.skip("no oversold signals today")
            task["placed"] = placed
        self.say(self.t.name, "16:05", f"AMO buy orders for tomorrow: {len(placed)}")
        if placed:
            self.notify(
                "trading", "info", "AMO orders placed", f"Placed {len(placed)}: {', '.join(placed)}"
            )

    # helpers --------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The trader's strategy settings (``user_trading_config``), read fresh each time."""
        with Session(self.engine, expire_on_commit=False) as session:
            values = as_dict(get_config(session, self.uid, self.uid))
            session.commit()
        return values

    def notify(
        self,
        kind: str,
        level: str,
        title: str,
        message: str,
        *,
        dedupe: str | None = None,
        channels: tuple[str, ...] | None = None,
    ) -> None:
        result = tradelog.notify(
            self.uid, kind, level, title, message, dedupe_key=dedupe, channels=channels
        )
        external = [c.describe() for c in result.channels if c.channel != "in_app"]
        if external:  # only when Telegram or email is set up
            self.t.notes.append(f"{title}: " + "; ".join(external))


# --------------------------------------------------------------------------- setup and summary


def setup(base: Path, keep: bool) -> tuple[str, Path]:
    """Create (or reuse with ``keep``) the demo database and log directory under ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    db_path, log_dir = base / "demo.db", base / "logs"
    if not keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(log_dir, ignore_errors=True)
    url = f"sqlite:///{db_path}"
    tradelog.db.upgrade(url)
    return url, log_dir


@dataclass
class Delivery:
    """Where notifications go in this run."""

    telegram: str | None
    email: str | None

    @property
    def recording(self) -> bool:
        """Neither Telegram nor e-mail is set up: the recording channels stand in for both."""
        return self.telegram is None and self.email is None


def channels_from_env() -> Delivery:
    chat_id = os.environ.get("DEMO_TELEGRAM_CHAT_ID")
    email_to = os.environ.get("DEMO_EMAIL_TO")
    telegram = chat_id if os.environ.get("TRADELOG_TELEGRAM_BOT_TOKEN") and chat_id else None
    email = email_to if os.environ.get("TRADELOG_SMTP_HOST") and email_to else None
    return Delivery(telegram, email)


def create_people(url: str, delivery: Delivery) -> None:
    """Users, trading configs and notification preferences (the host application's job)."""
    engine = create_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        for person in (*TRADERS, OPERATOR):
            found = session.execute(
                text("SELECT id FROM users WHERE email = :e"), {"e": person.email}
            ).scalar()
            person.user_id = found or (
                create_user(session, email=person.email, name=person.name, role=person.role).id
            )
            if person.role == "user":
                update_config(session, person.user_id, person.user_id, default_target_pct=0.08)
            prefs: dict[str, object] = {}
            chat = person.chat if delivery.recording else delivery.telegram
            address = person.email if delivery.recording else delivery.email
            if chat:
                prefs |= {"telegram_chat_id": chat, "telegram_enabled": True}
            if address:
                prefs |= {"email_address": address, "email_enabled": True}
            if person.quiet:
                now = datetime.now(IST)
                start = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
                end = (now + timedelta(hours=2)).time().replace(second=0, microsecond=0)
                prefs |= {"quiet_hours_start": start, "quiet_hours_end": end}
                person.notes.append(
                    f"quiet hours {start:%H:%M}-{end:%H:%M} IST (in force now): Telegram and"
                    f" e-mail wait until {end:%H:%M} IST and go out as one digest per channel;"
                    " critical messages go at once; in-app records everything"
                )
            update_preferences(session, person.user_id, person.user_id, **prefs)
        session.commit()
    engine.dispose()
    if delivery.recording:
        print(
            "channels: in-app, and Telegram and e-mail through tradelog.testing's RECORDING"
            " channels\n  (no bot token or SMTP host is set: messages are rendered exactly as"
            " Telegram and e-mail\n   would receive them and kept here; nothing leaves this"
            " machine)"
        )
        print("  (real Telegram: TRADELOG_TELEGRAM_BOT_TOKEN and DEMO_TELEGRAM_CHAT_ID;")
        print("   real e-mail: TRADELOG_SMTP_HOST, TRADELOG_SMTP_FROM, ... and DEMO_EMAIL_TO)")
        return
    used = (
        ["in-app"]
        + (["telegram"] if delivery.telegram else [])
        + (["email"] if delivery.email else [])
    )
    print(f"channels: {', '.join(used)}")


def drain(timeout: float) -> None:
    """Let the delivery worker send everything due (rate limits allowing)."""
    if not testing.drain(timeout):
        print(f"  (some deliveries were still due after {timeout:.0f} s)")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    if not rows:
        return "  (none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join("  " + line.rstrip() for line in lines)


def _yes(flag: object) -> str:
    return "sent" if flag else "-"


def inbox(connection: Any, where: str) -> list[tuple[str, ...]]:
    return [
        (str(r[0]), str(r[1]), str(r[2]), str(r[3]), _yes(r[4]), _yes(r[5]))
        for r in connection.execute(
            text(
                "SELECT u.name, n.type, n.level, n.title, n.telegram_sent, n.email_sent "
                f"FROM notifications n JOIN users u ON u.id = n.user_id WHERE {where} "
                "ORDER BY u.id, n.id"
            )
        )
    ]


def cli(url: str, *command: str) -> str:
    """The output of ``python -m tradelog --database-url URL COMMAND`` (as an operator types it)."""
    result = subprocess.run(
        [sys.executable, "-m", "tradelog", "--database-url", url, *command],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )
    return (result.stdout + result.stderr).rstrip()


def summary(url: str, log_dir: Path) -> None:
    engine = create_engine(url)
    operator = OPERATOR.user_id
    with engine.connect() as c:
        counts = [(t, str(c.execute(text(f"SELECT count(*) FROM {t}")).scalar())) for t in TABLES]
        deliveries = [
            (str(r[0]), str(r[1]), str(r[2]))
            for r in c.execute(
                text(
                    "SELECT channel, status, count(*) FROM notification_deliveries "
                    "GROUP BY channel, status ORDER BY channel, status"
                )
            )
        ]
        in_app = c.execute(text("SELECT count(*) FROM notifications")).scalar()
        owners = inbox(c, f"n.user_id != {operator}")
        ops = inbox(c, f"n.user_id = {operator}")
        tasks = [
            (str(r[0]), str(r[1]), str(r[2]))
            for r in c.execute(
                text(
                    "SELECT u.name, t.task_name, t.status FROM service_task_execution t "
                    "JOIN users u ON u.id = t.user_id ORDER BY t.id"
                )
            )
        ]
    engine.dispose()
    files = sorted(p for p in log_dir.rglob("*") if p.is_file() and "_runtime" not in p.parts)
    print("\nrows written")
    print(table(counts, ("table", "rows")))
    print("\ntask executions")
    print(table(tasks, ("user", "task", "status")))
    print("\nthe owners' inboxes: plain sentences, never internals (telegram/email: sent flags)")
    print(table(owners, ("user", "type", "level", "title", "telegram", "email")))
    print(f"\nthe operator's inbox ({OPERATOR.name}, an admin): the detail of every error group")
    print(table(ops, ("user", "type", "level", "title", "telegram", "email")))
    print("\nthe operator's view of the errors: tradelog errors groups")
    print("\n".join("  " + line for line in cli(url, "errors", "groups").splitlines()))
    print("\nthe outbox: one delivery per notification and external channel")
    print(table([("in_app", "recorded", str(in_app)), *deliveries], ("channel", "status", "count")))
    print(f"\nfiles written under {log_dir}")
    rows = []
    for path in files:
        lines = sum(1 for _ in path.open("rb")) if path.suffix == ".jsonl" else "-"
        rows.append((str(path.relative_to(log_dir)), str(lines)))
    print(table(rows, ("file", "lines")))


def show_recorded(channels: dict[str, Any]) -> None:
    """What the recording channels received, per chat and mailbox; Meera's digests in full."""
    names = {p.chat: p.name for p in (*TRADERS, OPERATOR)} | {
        p.email: p.name for p in (*TRADERS, OPERATOR)
    }
    print("\nmessages the RECORDING channels received (tradelog.testing; nothing was sent out)")
    for kind in ("telegram", "email"):
        recorder: testing.RecordingChannel = channels[kind]
        for address in sorted({m.address for m in recorder.sent}):
            sent = recorder.messages(address)
            who = f"{names.get(address, '?')} ({'chat ' if kind == 'telegram' else ''}{address})"
            print(f"  {kind:<8} -> {who}: {len(sent)} message(s)")
            for message in sent:
                label = message.subject if kind == "email" else message.title
                print(f"      {message.level:<8} {label}{'  [silent]' if message.silent else ''}")
    meera = next(t for t in TRADERS if t.quiet)
    digests = [
        m for m in channels["telegram"].messages(meera.chat) if "during quiet hours" in m.title
    ]
    if digests:
        print(f"\n  {meera.name}'s quiet-hours digest, as sent to Telegram (HTML):")
        for line in digests[-1].text.splitlines():
            print(f"    | {line}")
    mails = channels["email"].messages(OPERATOR.email)
    if mails:
        print(f"\n  the first e-mail to {OPERATOR.name} (subject: {mails[0].subject}):")
        for line in mails[0].text.splitlines()[:8]:
            print(f"    | {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".tradelog"), help="output directory")
    parser.add_argument("--keep", action="store_true", help="keep the previous run's data")
    parser.add_argument("--console", action="store_true", help="also print every log line")
    parser.add_argument(
        "--pace", type=float, default=0.04, help="real seconds per 5 simulated minutes"
    )
    args = parser.parse_args(argv)

    url, log_dir = setup(args.dir.resolve(), args.keep)
    print(f"tradelog demo: database {url}")
    print(f"               logs     {log_dir}/users/<id>/service-YYYY-MM-DD.jsonl")
    delivery = channels_from_env()
    create_people(url, delivery)
    clock = DemoClock()
    recording = testing.recording_channels() if delivery.recording else None
    runtime = tradelog.configure(
        database_url=url,
        log_dir=log_dir,
        console=args.console,
        level="INFO",
        worker=True,
        worker_poll_interval=0.05,
        clock=clock,
        channels=recording,
    )
    lock = threading.Lock()

    def say(name: str, sim_time: str, what: str) -> None:
        with lock:
            print(f"  {sim_time} IST  {name:<6} {what}")

    print("\nthe day (simulated market time):")
    started = time.monotonic()
    engine = create_engine(url)
    market = Market()
    threads = [
        threading.Thread(target=Day(t, engine, market, say).run, name=f"trader-{t.name}")
        for t in TRADERS
    ]
    for thread in threads:
        thread.start()
    market.run(args.pace)
    for thread in threads:
        thread.join()
    wait = 15.0 if delivery.recording else 90.0
    tradelog.flush(timeout=10)
    drain(wait)
    print(f"\nsimulated day done in {time.monotonic() - started:.1f} s")
    print(
        "\nthree hours later (the demo's clock jumps): Meera's quiet hours are over, and Ravi's"
        " service\nhas sent no heartbeat since 16:10"
    )
    clock.jump(timedelta(hours=3))
    if runtime.stale is not None:
        check = runtime.stale.run_check()  # the worker process checks every minute; now, here
        if check is not None and check.opened:
            print(f"  stale services reported: {len(check.opened)} (to the operator and the owner)")
    drain(wait)
    tradelog.shutdown()
    engine.dispose()
    for trader in TRADERS:
        if trader.notes:
            print(f"\nwhere {trader.name}'s notifications went (user {trader.user_id}):")
            for note in trader.notes:
                print(f"  - {note}")
    summary(url, log_dir)
    if recording is not None:
        show_recorded(recording)
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    cli_prefix = f"{python} -m tradelog --database-url {url}"
    print("\nlook at what it wrote (the log directory lets status and retention see the files):")
    print(f"  export TRADELOG_LOG_DIR={log_dir}")
    for command in (
        "logs --min-level warning",
        f"logs --user {TRADERS[0].user_id} --grep AMO-",
        "logs --module trad",
        "errors groups",
        "errors list",
        "status",
        f"notify list --user {OPERATOR.user_id}",
        f"notify list --user {TRADERS[2].user_id}",
        "notify deliveries",
        f"config show --user {TRADERS[1].user_id}",
        "audit",
        "retention run --dry-run",
    ):
        print(f"  {cli_prefix} {command}")
    serve_hint(cli_prefix)
    return 0


def serve_hint(cli_prefix: str) -> None:
    """How to open this database in a browser: the inbox, the log viewer, the error console."""
    print("\nor in a browser (the error console, logs, inbox; the JSON API at /docs):")
    try:
        import fastapi  # noqa: F401, PLC0415 - only to tell whether the web extra is there
    except ImportError:
        print("  pip install -e '.[web]'   # tradelog serve needs the web extra")
    token = "$(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
    print(f"  export TRADELOG_WEB_ADMIN_TOKEN={token}")
    print(f"  {cli_prefix} serve --port 8000")
    print("  then open http://127.0.0.1:8000/ui/admin/errors and sign in with that token")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (tradelog.TradelogError, ValueError) as exc:  # bad TRADELOG_* or DEMO_* values
        print(f"trading_day.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
