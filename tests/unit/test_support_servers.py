"""The local fakes behave like the real services as seen by the real client libraries.

python-telegram-bot talks HTTP to :class:`FakeBotApi`, aiosmtplib talks SMTP to
:class:`SmtpServer`; nothing is patched.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import warnings
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from email.message import EmailMessage
from typing import Any, TypeVar

import aiosmtplib
import pytest
from hypothesis import given
from hypothesis import strategies as st
from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

from tests.support import clients
from tests.support.fake_bot_api import (
    DEFAULT_TOKEN,
    FakeBotApi,
    HtmlEntityError,
    ScriptedResponse,
    SlidingWindowLimiter,
    UploadedFile,
    bad_request,
    delay,
    drop_connection,
    forbidden,
    migrate_to_chat,
    ok,
    parse_telegram_html,
    raw_response,
    retry_after,
    server_error,
    unauthorized,
)
from tests.support.smtp_server import SmtpServer

T = TypeVar("T")
CHAT = 4242


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine on a fresh event loop that is closed afterwards.

    A short grace period lets client transports that were closed on an error path
    (TLS shutdown takes a few loop iterations) finish before the loop goes away.
    """

    async def main() -> T:
        try:
            return await coro
        finally:
            await asyncio.sleep(0.02)

    return asyncio.run(main())


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    """A running fake Bot API without rate limits."""
    with FakeBotApi() as fake:
        yield fake
        assert fake.server_errors == []


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB's timedelta time periods (no PTBDeprecationWarning on RetryAfter)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def make_bot(api: FakeBotApi, token: str | None = None) -> Bot:
    """A python-telegram-bot ``Bot`` talking to the fake."""
    return Bot(token or api.token, base_url=api.base_url, base_file_url=api.base_file_url)


async def send_expecting_error(
    api: FakeBotApi, response: ScriptedResponse, **kwargs: Any
) -> TelegramError:
    """Script one answer for CHAT, send a message and return the raised PTB error."""
    api.script(chat_id=CHAT, responses=[response])
    async with make_bot(api) as bot:
        with pytest.raises(TelegramError) as info:
            await bot.send_message(CHAT, "hello", **kwargs)
    return info.value


# ---------------------------------------------------------------------------
# Fake Bot API: happy path and wire format
# ---------------------------------------------------------------------------


def test_ptb_urls_are_base_url_plus_token(api: FakeBotApi) -> None:
    bot = make_bot(api)
    assert api.base_url == f"{api.api_url}/bot"
    assert bot.base_url == f"{api.api_url}/bot{DEFAULT_TOKEN}"
    assert bot.base_file_url == f"{api.api_url}/file/bot{DEFAULT_TOKEN}"
    assert api.method_url("getMe") == f"{bot.base_url}/getMe"


def test_get_me_and_send_message_round_trip(api: FakeBotApi) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        async with make_bot(api) as bot:
            me = await bot.get_me()
            first = await bot.send_message(
                CHAT,
                "<b>Order failed</b> for &lt;BTC&gt; &amp; co",
                parse_mode="HTML",
                disable_notification=True,
            )
            second = await bot.send_message(CHAT, "plain follow-up")
            return me, first, second

    me, first, second = run(scenario())
    assert me.is_bot
    assert me.id == int(DEFAULT_TOKEN.split(":")[0])
    assert first.message_id == 1
    assert second.message_id == 2
    assert first.chat.id == CHAT
    assert first.chat.type == "private"
    assert first.text == "Order failed for <BTC> & co"
    assert first.date.tzinfo is not None

    methods = [r.method for r in api.requests]
    # Bot.initialize() (entered by ``async with``) calls getMe once itself.
    assert methods == ["getMe", "getMe", "sendMessage", "sendMessage"]
    sent = api.sent_messages(CHAT)
    assert [r.message_id for r in sent] == [1, 2]
    html = sent[0]
    assert html.token == DEFAULT_TOKEN
    assert html.http_method == "POST"
    assert html.content_type.startswith("application/x-www-form-urlencoded")
    assert html.params == {
        "chat_id": str(CHAT),
        "text": "<b>Order failed</b> for &lt;BTC&gt; &amp; co",
        "parse_mode": "HTML",
        "disable_notification": "true",
    }
    assert html.chat_id == str(CHAT)
    assert html.parse_mode == "HTML"
    assert html.disable_notification is True
    assert html.status == 200
    assert html.received_wall == pytest.approx(time.time(), abs=30)
    assert html.received_monotonic <= html.processed_monotonic
    assert sent[1].parse_mode is None
    assert sent[1].disable_notification is False
    assert api.sent_messages(CHAT + 1) == []


def test_json_multipart_and_query_bodies_are_accepted(api: FakeBotApi) -> None:
    url = api.method_url("sendMessage")
    with clients.client(timeout=5) as client:
        as_json = client.post(
            url, json={"chat_id": 7, "text": "json", "disable_notification": True}
        )
        as_multipart = client.post(
            url,
            data={"chat_id": "@alerts", "text": "multipart"},
            files={"document": ("report.csv", b"a,b\r\n1,2\r\n", "text/csv")},
        )
        as_query = client.get(url, params={"chat_id": "-1001234", "text": "query"})

    assert [r.status_code for r in (as_json, as_multipart, as_query)] == [200, 200, 200]
    assert as_json.json()["result"]["chat"] == {
        "id": 7,
        "type": "private",
        "first_name": "User 7",
    }
    assert as_multipart.json()["result"]["chat"]["type"] == "channel"
    assert as_query.json()["result"]["chat"]["type"] == "supergroup"

    json_req, multipart_req, query_req = api.sent_messages()
    assert json_req.params == {"chat_id": 7, "text": "json", "disable_notification": True}
    assert json_req.chat_id == "7"
    assert json_req.disable_notification is True
    assert multipart_req.params["text"] == "multipart"
    assert multipart_req.params["document"] == UploadedFile(
        "report.csv", "text/csv", b"a,b\r\n1,2\r\n"
    )
    assert multipart_req.chat_id == "@alerts"
    assert query_req.http_method == "GET"
    assert query_req.chat_id == "-1001234"


def test_files_download_through_base_file_url(api: FakeBotApi) -> None:
    content = b"\x00binary\r\ncontent"
    api.add_file("doc-1", content, "documents/report.bin")

    async def scenario() -> tuple[str, bytes]:
        async with make_bot(api) as bot:
            file = await bot.get_file("doc-1")
            return str(file.file_path), bytes(await file.download_as_bytearray())

    file_path, downloaded = run(scenario())
    assert file_path == f"{api.base_file_url}{DEFAULT_TOKEN}/documents/report.bin"
    assert downloaded == content
    download = api.requests[-1]
    assert (download.method, download.http_method, download.status) == ("file", "GET", 200)


def test_concurrent_sends_get_unique_increasing_ids(api: FakeBotApi) -> None:
    async def scenario() -> list[int]:
        async with make_bot(api) as bot:
            messages = await asyncio.gather(
                *(bot.send_message(1000 + i, f"message {i}") for i in range(40))
            )
            return [m.message_id for m in messages]

    ids = run(scenario())
    assert sorted(ids) == list(range(1, 41))
    delivered = api.sent_messages()
    assert [r.message_id for r in delivered] == list(range(1, 41))
    assert [r.seq for r in api.requests] == list(range(1, 42))


def test_reset_forgets_everything(api: FakeBotApi) -> None:
    api.script(responses=[forbidden()])

    async def send() -> None:
        async with make_bot(api) as bot:
            await bot.send_message(CHAT, "after reset")

    api.reset()
    assert api.pending_scripts() == 0
    run(send())
    assert [r.message_id for r in api.sent_messages()] == [1]
    api.reset()
    assert api.requests == []
    run(send())
    assert [r.message_id for r in api.sent_messages()] == [1]


# ---------------------------------------------------------------------------
# Fake Bot API: scripted failures as python-telegram-bot sees them
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected", "message"),
    [
        (bad_request("Bad Request: chat not found"), BadRequest, "Chat not found"),
        (forbidden(), Forbidden, "Forbidden: bot was blocked by the user"),
        (unauthorized(), InvalidToken, "Unauthorized"),
        (server_error(502), NetworkError, "Bad Gateway"),
        (server_error(500), NetworkError, "Internal Server Error"),
        (server_error(503, "Service Unavailable: restarting"), NetworkError, None),
        (raw_response(502, b"<html>502 Bad Gateway</html>"), NetworkError, None),
        (drop_connection(), NetworkError, None),
        (migrate_to_chat(-1009876), ChatMigrated, None),
    ],
)
def test_scripted_errors_raise_the_matching_ptb_exception(
    api: FakeBotApi,
    response: ScriptedResponse,
    expected: type[TelegramError],
    message: str | None,
) -> None:
    error = run(send_expecting_error(api, response))
    assert type(error) is expected
    if message is not None:
        assert error.message == message
    if isinstance(error, ChatMigrated):
        assert error.new_chat_id == -1009876
    recorded = api.requests[-1]
    assert recorded.scripted
    assert recorded.status == (None if response.drop_connection else response.status)
    assert api.sent_messages() == []


def test_retry_after_is_a_timedelta_with_ptb_timedelta_opt_in(
    api: FakeBotApi, ptb_timedelta: None
) -> None:
    error = run(send_expecting_error(api, retry_after(7)))
    assert type(error) is RetryAfter
    assert isinstance(error, RetryAfter)
    assert error.retry_after == timedelta(seconds=7)
    assert api.requests[-1].status == 429
    assert api.requests[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }


def test_retry_after_without_opt_in_is_an_int_and_warns(
    api: FakeBotApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PTB_TIMEDELTA", raising=False)
    with pytest.warns(PTBDeprecationWarning, match="PTB_TIMEDELTA"):
        error = run(send_expecting_error(api, retry_after(3)))
    assert isinstance(error, RetryAfter)
    with pytest.warns(PTBDeprecationWarning, match="PTB_TIMEDELTA"):
        seconds = error.retry_after
    assert seconds == 3
    assert type(seconds) is int

    # RetryAfter.__init__ itself reads the property, so with warnings as errors the
    # 429 surfaces as PTBDeprecationWarning instead of RetryAfter.
    async def scenario() -> None:
        api.script(chat_id=CHAT, responses=[retry_after(3)])
        async with make_bot(api) as bot:
            await bot.send_message(CHAT, "hello")

    with warnings.catch_warnings():
        warnings.simplefilter("error", PTBDeprecationWarning)
        with pytest.raises(PTBDeprecationWarning):
            run(scenario())
    assert os.environ.get("PTB_TIMEDELTA") is None


def test_slow_answer_times_out_but_is_still_delivered(api: FakeBotApi) -> None:
    error = run(send_expecting_error(api, delay(1.0), read_timeout=0.2))
    assert type(error) is TimedOut
    delivered = api.wait_for_messages(1, timeout=5)
    assert delivered[0].latency >= 1.0
    assert delivered[0].text == "hello"


def test_delay_can_precede_an_error(api: FakeBotApi) -> None:
    started = time.monotonic()
    error = run(send_expecting_error(api, delay(0.3, then=forbidden())))
    assert type(error) is Forbidden
    assert time.monotonic() - started >= 0.3


def test_unknown_and_malformed_tokens_raise_invalid_token(api: FakeBotApi) -> None:
    async def get_me(token: str) -> None:
        async with make_bot(api, token):
            pass

    for token, status, raw in [
        ("987654321:AAunknownTokenForTheFake", 401, "Unauthorized"),
        ("not-a-token", 404, "Not Found"),
    ]:
        with pytest.raises(InvalidToken, match="was rejected by the server") as info:
            run(get_me(token))
        # Bot.initialize() wraps the InvalidToken raised for the HTTP status.
        cause = info.value.__cause__
        assert isinstance(cause, InvalidToken)
        assert cause.message == raw
        assert api.requests[-1].status == status


def test_scripts_apply_per_chat_then_to_any_chat_in_order(api: FakeBotApi) -> None:
    api.script(chat_id=1, responses=[bad_request(), ok()])
    api.script(responses=[forbidden()])

    async def scenario() -> list[str]:
        outcomes: list[str] = []
        async with make_bot(api) as bot:
            for chat in (2, 1, 1, 2, 1):
                try:
                    await bot.send_message(chat, f"to {chat}")
                    outcomes.append("ok")
                except TelegramError as exc:
                    outcomes.append(type(exc).__name__)
        return outcomes

    assert run(scenario()) == ["Forbidden", "BadRequest", "ok", "ok", "ok"]
    assert api.pending_scripts() == 0
    assert [r.chat_id for r in api.sent_messages()] == ["1", "2", "1"]


def test_scripts_for_other_methods(api: FakeBotApi) -> None:
    api.script(method="getMe", responses=[server_error(502)])

    async def scenario() -> None:
        async with make_bot(api):
            pass

    with pytest.raises(NetworkError, match="Bad Gateway"):
        run(scenario())
    run(scenario())


def test_stop_wakes_delayed_answers_quickly() -> None:
    fake = FakeBotApi().start()
    fake.script(responses=[delay(30)])
    result: list[BaseException] = []

    async def scenario() -> None:
        async with make_bot(fake) as bot:
            try:
                await bot.send_message(CHAT, "never", read_timeout=10)
            except TelegramError as exc:
                result.append(exc)

    async def stop_soon() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(fake.stop)

    async def both() -> None:
        await asyncio.gather(scenario(), stop_soon())

    started = time.monotonic()
    run(both())
    assert time.monotonic() - started < 5
    assert len(result) == 1
    assert isinstance(result[0], NetworkError)


# ---------------------------------------------------------------------------
# Fake Bot API: message validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("<br>", 'unsupported start tag "br"'),
        ("<b>unclosed", 'can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", "unexpected end tag"),
        ("1 < 2", "unsupported start tag at byte offset 2"),
        ("AT&T", "unsupported html entity"),
        ("a > b", "unexpected character '>'"),
        ('<span class="x">s</span>', 'unsupported start tag "span"'),
    ],
)
def test_invalid_html_is_a_bad_request(api: FakeBotApi, text: str, fragment: str) -> None:
    async def scenario() -> None:
        async with make_bot(api) as bot:
            await bot.send_message(CHAT, text, parse_mode="HTML")

    with pytest.raises(BadRequest) as info:
        run(scenario())
    assert info.value.message.startswith("Can't parse entities:")
    assert fragment in info.value.message.lower()


def test_valid_html_and_text_limits() -> None:
    assert parse_telegram_html("<b>a</b> &lt;&#60;&#x3C; <a href='https://x.y/?a=1'>l</a>") == (
        "a <<< l"
    )
    assert parse_telegram_html('<span class="tg-spoiler">s</span><tg-spoiler>t</tg-spoiler>') == (
        "st"
    )
    assert parse_telegram_html("<pre><code class='language-py'>x</code></pre>") == "x"
    with pytest.raises(HtmlEntityError, match="byte offset 6"):
        parse_telegram_html("\u20ac\u20ac<x>")

    with FakeBotApi(max_text_length=10) as fake:

        async def send(text: str, parse_mode: str | None = None) -> None:
            async with make_bot(fake) as bot:
                await bot.send_message(CHAT, text, parse_mode=parse_mode)

        run(send("<b>0123456789</b>", "HTML"))
        with pytest.raises(BadRequest, match="Message is too long"):
            run(send("01234567890"))
        with pytest.raises(BadRequest, match="Message text is empty"):
            run(send("<b> </b>", "HTML"))
        run(send("1 < 2"))
    with FakeBotApi(validate_html=False) as lenient:

        async def send_raw() -> None:
            async with make_bot(lenient) as bot:
                await bot.send_message(CHAT, "1 < 2", parse_mode="HTML")

        run(send_raw())


# ---------------------------------------------------------------------------
# Fake Bot API: rate limits
# ---------------------------------------------------------------------------


def test_per_chat_limit_answers_429_and_counts_violations(ptb_timedelta: None) -> None:
    with FakeBotApi(enforce_limits=True, global_per_second=30, per_chat_per_second=1) as fake:

        async def scenario() -> RetryAfter:
            async with make_bot(fake) as bot:
                await bot.send_message(CHAT, "first")
                await bot.send_message(CHAT + 1, "other chat is independent")
                with pytest.raises(RetryAfter) as info:
                    await bot.send_message(CHAT, "too soon")
                wait = fake.sent_messages(CHAT)[0].processed_monotonic + 1.0 - time.monotonic()
                await asyncio.sleep(max(wait, 0) + 0.05)
                await bot.send_message(CHAT, "after the window")
                return info.value

        error = run(scenario())
        assert error.retry_after == timedelta(seconds=1)
        assert fake.limit_violations == 1
        violation = fake.violations[0]
        assert (violation.limit_violation, violation.status) == ("chat", 429)
        assert violation.text == "too soon"
        assert [r.text for r in fake.sent_messages(CHAT)] == ["first", "after the window"]
        gap = (
            fake.sent_messages(CHAT)[1].processed_monotonic
            - fake.sent_messages(CHAT)[0].processed_monotonic
        )
        assert gap >= 1.0


def test_global_limit_answers_429(ptb_timedelta: None) -> None:
    with FakeBotApi(enforce_limits=True, global_per_second=5, per_chat_per_second=1) as fake:

        async def scenario() -> None:
            async with make_bot(fake) as bot:
                for chat in range(1, 6):
                    await bot.send_message(chat, "ok")
                with pytest.raises(RetryAfter):
                    await bot.send_message(6, "sixth within one second")

        run(scenario())
        assert fake.limit_violations == 1
        assert fake.violations[0].limit_violation == "global"
        assert len(fake.sent_messages()) == 5
        fake.reset()
        assert fake.limit_violations == 0
        run(scenario())


def test_group_limit_is_optional(ptb_timedelta: None) -> None:
    with FakeBotApi(enforce_limits=True, per_chat_per_second=5, per_group_per_minute=2) as fake:

        async def scenario() -> None:
            async with make_bot(fake) as bot:
                await bot.send_message(-100123, "1")
                await bot.send_message(-100123, "2")
                await bot.send_message(CHAT, "private chats are not groups")
                await bot.send_message(CHAT, "private chats are not groups")
                with pytest.raises(RetryAfter):
                    await bot.send_message(-100123, "3")

        run(scenario())
        assert [v.limit_violation for v in fake.violations] == ["group"]


def test_limits_are_off_by_default(api: FakeBotApi) -> None:
    async def scenario() -> None:
        async with make_bot(api) as bot:
            for i in range(5):
                await bot.send_message(CHAT, f"burst {i}")

    run(scenario())
    assert len(api.sent_messages(CHAT)) == 5
    assert api.limit_violations == 0


def test_sliding_window_boundaries() -> None:
    window = SlidingWindowLimiter(limit=3, length=1.0)
    for now in (0.0, 0.1, 0.2):
        assert window.wait_time("k", now) == 0.0
        window.admit("k", now)
    assert window.wait_time("k", 0.5) == pytest.approx(0.5)
    assert window.wait_time("k", 0.999) == pytest.approx(0.001)
    assert window.wait_time("other", 0.5) == 0.0
    assert window.wait_time("k", 1.0) == 0.0
    window.admit("k", 1.0)
    assert window.count("k", 1.0) == 3
    assert window.wait_time("k", 1.05) == pytest.approx(0.05)


@given(
    limit=st.integers(min_value=1, max_value=5),
    millis=st.lists(st.integers(min_value=0, max_value=4000), max_size=60),
)
def test_sliding_window_is_exact(limit: int, millis: list[int]) -> None:
    window = SlidingWindowLimiter(limit, 1.0)
    admitted: list[int] = []  # the oracle counts in whole milliseconds, free of float rounding
    for now in sorted(millis):
        in_window = [a for a in admitted if a > now - 1000]
        wait = window.wait_time("k", now / 1000)
        if wait == 0.0:
            assert len(in_window) < limit
            window.admit("k", now / 1000)
            admitted.append(now)
        else:
            assert len(in_window) >= limit
            assert wait == pytest.approx((in_window[0] + 1000 - now) / 1000)
    for end in admitted:
        assert sum(1 for a in admitted if end - 1000 < a <= end) <= limit


# ---------------------------------------------------------------------------
# SMTP server
# ---------------------------------------------------------------------------


def make_message(to: str | list[str] = "ops@example.com", subject: str = "Alert") -> EmailMessage:
    """A small text message."""
    message = EmailMessage()
    message["From"] = "tradelog@example.com"
    message["To"] = to if isinstance(to, str) else ", ".join(to)
    message["Subject"] = subject
    message.set_content("Order 17 failed: insufficient margin \u20b9")
    return message


def test_starttls_with_auth_delivers() -> None:
    with SmtpServer(security="starttls", auth_required=True) as smtp:

        async def scenario() -> None:
            client = aiosmtplib.SMTP(
                hostname=smtp.host,
                port=smtp.port,
                start_tls=True,
                tls_context=smtp.client_ssl_context(),
                username=smtp.username,
                password=smtp.password,
                local_hostname="localhost",
            )
            async with client:
                assert client.supports_extension("auth")
                errors, _ = await client.send_message(make_message(subject="Margin call"))
                assert errors == {}

        run(scenario())
        (received,) = smtp.messages
        assert received.mail_from == "tradelog@example.com"
        assert received.rcpt_tos == ("ops@example.com",)
        assert received.subject == "Margin call"
        assert received.text_body() == "Order 17 failed: insufficient margin \u20b9\n"
        assert received.tls is True
        assert received.login == smtp.username
        assert b"Subject: Margin call" in received.raw
        assert [(a.mechanism, a.login, a.success, a.tls) for a in smtp.auth_attempts] == [
            ("PLAIN", smtp.username, True, True)
        ]
        assert smtp.connections == 1


def test_starttls_server_refuses_mail_and_auth_before_the_upgrade() -> None:
    with SmtpServer(security="starttls", auth_required=True) as smtp:

        async def scenario() -> None:
            client = aiosmtplib.SMTP(
                hostname=smtp.host, port=smtp.port, start_tls=False, local_hostname="localhost"
            )
            async with client:
                await client.ehlo()
                assert client.supports_extension("starttls")
                assert not client.supports_extension("auth")
                with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
                    await client.mail("tradelog@example.com")
                assert info.value.code == 530

        run(scenario())
        assert smtp.messages == []


def test_implicit_tls_verifies_against_the_ca_file() -> None:
    with SmtpServer(security="tls", auth_required=True) as smtp:

        async def scenario() -> None:
            await aiosmtplib.send(
                make_message(),
                hostname=smtp.host,
                port=smtp.port,
                use_tls=True,
                cert_bundle=smtp.ca_cert_pem_path,
                username=smtp.username,
                password=smtp.password,
                local_hostname="localhost",
            )

        run(scenario())
        (received,) = smtp.messages
        assert received.tls is True
        assert received.login == smtp.username
        assert smtp.auth_attempts[0].tls is True


def test_untrusted_certificate_is_rejected() -> None:
    with SmtpServer(security="tls") as smtp:

        async def scenario() -> None:
            await aiosmtplib.send(
                make_message(),
                hostname=smtp.host,
                port=smtp.port,
                use_tls=True,
                tls_context=ssl.create_default_context(),
                local_hostname="localhost",
            )

        with pytest.raises(aiosmtplib.SMTPConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            run(scenario())
        assert smtp.messages == []


def test_plain_smtp_without_auth() -> None:
    with SmtpServer(security="none") as smtp:
        run(aiosmtplib.send(make_message(), **smtp.client_kwargs(with_auth=False)))
        (received,) = smtp.messages
        assert received.tls is False
        assert received.login is None
        assert smtp.auth_attempts == []


def test_plain_smtp_with_auth_over_cleartext() -> None:
    with SmtpServer(security="none", auth_required=True) as smtp:
        run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert smtp.messages[0].login == smtp.username
        assert smtp.auth_attempts[0].tls is False


@pytest.mark.parametrize("security", ["starttls", "tls", "none"])
def test_wrong_password_is_535(security: str) -> None:
    with SmtpServer(security=security, auth_required=True) as smtp:  # type: ignore[arg-type]
        kwargs = {**smtp.client_kwargs(), "password": "wrong"}
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
            run(aiosmtplib.send(make_message(), **kwargs))
        assert info.value.code == 535
        # aiosmtplib tries every advertised mechanism before giving up.
        assert [(a.mechanism, a.login, a.success) for a in smtp.auth_attempts] == [
            ("PLAIN", smtp.username, False),
            ("LOGIN", smtp.username, False),
        ]
        assert smtp.messages == []


def test_login_mechanism() -> None:
    with SmtpServer(security="starttls", auth_required=True, auth_mechanisms=["LOGIN"]) as smtp:
        run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert [a.mechanism for a in smtp.auth_attempts] == ["LOGIN"]
        assert len(smtp.messages) == 1


def test_auth_required_refuses_anonymous_mail() -> None:
    with SmtpServer(security="starttls", auth_required=True) as smtp:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            run(aiosmtplib.send(make_message(), **smtp.client_kwargs(with_auth=False)))
        assert info.value.code == 530


@pytest.mark.parametrize(("code", "text"), [(550, "5.1.1 No such user"), (450, "4.2.1 Busy")])
def test_failed_recipient_has_the_scripted_code(code: int, text: str) -> None:
    with SmtpServer(security="starttls") as smtp:
        smtp.fail_recipient("Gone@Example.com", code=code, message=text)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
            run(aiosmtplib.send(make_message("gone@example.com"), **smtp.client_kwargs()))
        (refused,) = info.value.recipients
        assert isinstance(refused, aiosmtplib.SMTPRecipientRefused)
        assert (refused.code, refused.message, refused.recipient) == (
            code,
            text,
            "gone@example.com",
        )

        errors, _ = run(
            aiosmtplib.send(
                make_message(["gone@example.com", "ops@example.com"]), **smtp.client_kwargs()
            )
        )
        assert errors["gone@example.com"].code == code
        assert smtp.messages[0].rcpt_tos == ("ops@example.com",)

        smtp.clear_failures()
        run(aiosmtplib.send(make_message("gone@example.com"), **smtp.client_kwargs()))
        assert smtp.messages[1].rcpt_tos == ("gone@example.com",)


def test_recipient_failure_can_be_limited_to_some_attempts() -> None:
    with SmtpServer(security="none") as smtp:
        smtp.fail_recipient("ops@example.com", code=451, message="4.7.1 Try later", times=1)
        kwargs = smtp.client_kwargs(with_auth=False)
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            run(aiosmtplib.send(make_message(), **kwargs))
        run(aiosmtplib.send(make_message(), **kwargs))
        assert len(smtp.messages) == 1


def test_fail_next_data_and_next_mail() -> None:
    with SmtpServer(security="starttls") as smtp:
        smtp.fail_next_data(451)
        with pytest.raises(aiosmtplib.SMTPDataError) as data_info:
            run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert data_info.value.code == 451
        smtp.fail_next_mail(421, "4.7.0 Too many connections")
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as mail_info:
            run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert mail_info.value.code == 421
        run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert len(smtp.messages) == 1
    with pytest.raises(ValueError, match="4xx or 5xx"):
        smtp.fail_next_data(250)


def test_connection_reuse_is_observable() -> None:
    with SmtpServer(security="starttls", auth_required=True) as smtp:

        async def one_connection() -> None:
            async with aiosmtplib.SMTP(**smtp.client_kwargs()) as client:
                await client.send_message(make_message(subject="first"))
                await client.send_message(make_message(subject="second"))

        run(one_connection())
        assert smtp.connections == 1
        assert [m.subject for m in smtp.messages] == ["first", "second"]
        assert len({m.connection_id for m in smtp.messages}) == 1
        assert len(smtp.auth_attempts) == 1

        smtp.reset()
        for _ in range(2):
            run(aiosmtplib.send(make_message(), **smtp.client_kwargs()))
        assert smtp.connections == 2
        assert len({m.connection_id for m in smtp.messages}) == 2


def test_wait_for_messages_and_shared_ca() -> None:
    with (
        SmtpServer(security="tls") as first,
        SmtpServer(security="starttls", ca=first.ca) as second,
    ):
        assert first.port != second.port
        context = first.client_ssl_context()

        async def scenario() -> None:
            await aiosmtplib.send(
                make_message(),
                hostname=second.host,
                port=second.port,
                start_tls=True,
                tls_context=context,
                local_hostname="localhost",
            )

        run(scenario())
        assert len(second.wait_for_messages(1, timeout=1)) == 1
        with pytest.raises(TimeoutError):
            first.wait_for_messages(1, timeout=0.05)


def test_bot_api_wait_for_messages_times_out(api: FakeBotApi) -> None:
    with pytest.raises(TimeoutError):
        api.wait_for_messages(1, timeout=0.05)
