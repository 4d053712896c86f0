"""Secret scrubbing: key rules, text rules, structures, the structlog processor, properties."""

from __future__ import annotations

import copy
import json
import string
import time
from collections import OrderedDict, namedtuple
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tradelog._logs.redact import (
    CYCLE_MARKER,
    DEFAULT_MASK,
    Redactor,
    RedactProcessor,
    redact_text,
)
from tradelog._logs.sanitize import to_jsonable

MASK = DEFAULT_MASK
BOT_TOKEN = "123456789:AAEhBOweik6ad9r_QXMENQjcrGbqCr4K-ab"
BOT_SECRET = BOT_TOKEN.split(":")[1]
TELEGRAM_API = "https://api.telegram.org"

SECRET_KEYS = [
    "password",
    "Password",
    "PASSWORD",
    "db_password",
    "smtp_password",
    "SMTP_PASSWORD",
    "passwd",
    "pwd",
    "user_pwd",
    "pass",
    "passphrase",
    "secret",
    "client_secret",
    "clientSecret",
    "api_secret",
    "token",
    "access_token",
    "accessToken",
    "refresh-token",
    "bot_token",
    "BOT_TOKEN",
    "botToken",
    "csrftoken",
    "tokens",
    "token_id",
    "secret_token_count",
    "api_key",
    "apikey",
    "apiKey",
    "X-Api-Key",
    "access_key",
    "AWS_ACCESS_KEY_ID",
    "private_key",
    "privateKey",
    "authorization",
    "Authorization",
    "Proxy-Authorization",
    "auth_header",
    "authHeader",
    "auth",
    "basic_auth",
    "cookie",
    "Cookie",
    "Set-Cookie",
    "cookies",
    "session_id",
    "sessionId",
    "SESSIONID",
    "x-session-id",
    "credential",
    "credentials",
    "mpin",
    "mPin",
    "MPIN",
    "user_mpin",
    "totp",
    "totp_secret",
    "totpKey",
    "pin",
    "PIN",
    "user_pin",
    "userPIN",
    "pinCode",
    "pin_code",
    "otp",
    "OTP",
    "otp_code",
    "OTPCode",
    "jwt",
    "id_jwt",
    "auth_code",
    "signing_key",
    "twofa",
    "twoFA",
    "pw",
    "db_pw",
    "creds",
    "broker_creds",
]

PUBLIC_KEYS = [
    "event",
    "user",
    "username",
    "user_id",
    "order_id",
    "symbol",
    "price",
    "qty",
    "spinner",
    "pinned",
    "pinned_message",
    "pincode",
    "footprint",
    "bypass",
    "compass",
    "passenger",
    "author",
    "authenticated",
    "auth_method",
    "oauth_provider",
    "session",
    "keyword",
    "max_tokens",
    "token_count",
    "tokenCount",
    "prompt_tokens",
    "completion_tokens",
    "tokens_used",
    "token_type",
    "token_expires_at",
    "instrument_token",
    "instrumentToken",
    "exchange_token",
    "symboltoken",
    "symbol_token",
]

TEXT_CASES = [
    (
        f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage",
        f"POST https://api.telegram.org/bot123456789:{MASK}/sendMessage",
    ),
    (
        f'POST https://api.telegram.org/bot{BOT_TOKEN}/getUpdates "HTTP/1.1 200 OK"',
        f'POST https://api.telegram.org/bot123456789:{MASK}/getUpdates "HTTP/1.1 200 OK"',
    ),
    (f"using bot {BOT_TOKEN} now", f"using bot 123456789:{MASK} now"),
    (
        f"telegram.error.NetworkError: rejected {BOT_TOKEN}.",
        f"telegram.error.NetworkError: rejected 123456789:{MASK}.",
    ),
    ("postgresql://trader:hunt3r@db:5432/x", f"postgresql://trader:{MASK}@db:5432/x"),
    ("redis://:s3cret@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
    ("dsn postgresql://u:p@ss@h/db ok", f"dsn postgresql://u:{MASK}@h/db ok"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", f"Authorization: Bearer {MASK}"),
    ("authorization=Basic dXNlcjpwYXNz", f"authorization=Basic {MASK}"),
    ("Authorization: 'Token abc123xyz'", f"Authorization: 'Token {MASK}'"),
    (
        'headers={"Authorization": "Bearer abc123def456"}',
        f'headers={{"Authorization": "Bearer {MASK}"}}',
    ),
    ("request with Bearer abc123def456 rejected", f"request with Bearer {MASK} rejected"),
    ("sent basic dXNlcjpwYXNz header", f"sent basic {MASK} header"),
    ("GET /quote?token=abc123&symbol=NIFTY", f"GET /quote?token={MASK}&symbol=NIFTY"),
    ("GET /x?api_key=k1&apiKey=k2&x=1", f"GET /x?api_key={MASK}&apiKey={MASK}&x=1"),
    (
        "login failed: password=hunter2 retry=3",
        f"login failed: password={MASK} retry=3",
    ),
    ("api_key: k-123, user: bob", f"api_key: {MASK}, user: bob"),
    ("SMTP_PASSWORD = p@ss:w0rd;", f"SMTP_PASSWORD = {MASK}"),
    ("password=Tr0ub;REST user=bob", f"password={MASK} user=bob"),
    ("passphrase: correct horse battery", f"passphrase: {MASK}"),
    ("API Key: Zq9xK2mP7vL4nR8t", f"API Key: {MASK}"),
    ("auth code = 4411-9922 accepted=yes", f"auth code = {MASK} accepted=yes"),
    ("{'password' => 'Zq9xK2mP7vL4nR8t'}", f"{{'password' => '{MASK}'}}"),
    ("{:api_key=>Zq9xK2mP7vL4nR8t}", f"{{:api_key=>{MASK}"),
    ("BrokerError: ('api_key', 'Zq9xK2mP7vL4nR8t')", f"BrokerError: ('api_key', '{MASK}')"),
    (
        "BrokerError('login', \"X-Api-Key\", 99887766)",
        f"BrokerError('login', \"X-Api-Key\", {MASK})",
    ),
    (
        "[('Authorization', 'Token Zq9xK2mP7vL4nR8t'), ('X-Api-Key', 'Zq9xK2mP7vL4nR8t')]",
        f"[('Authorization', 'Token {MASK}'), ('X-Api-Key', '{MASK}')]",
    ),
    (
        "got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw from broker",
        f"got {MASK} from broker",
    ),
    ("retry with bearer abcdefghijklmnopqrst", f"retry with bearer {MASK}"),
    ("postgresql://u:pa/ss9@host/db", f"postgresql://u:{MASK}@host/db"),
    ("postgresql://u:p@h/db?to=a@b.example", f"postgresql://u:{MASK}@h/db?to=a@b.example"),
    (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
        f"-----BEGIN PGP PRIVATE KEY BLOCK-----{MASK}-----END PGP PRIVATE KEY BLOCK-----",
    ),
    ('password = "two words"', f'password = "{MASK}"'),
    ('{"password": "a \\"quoted\\" b", "user": "bob"}', f'{{"password": "{MASK}", "user": "bob"}}'),
    ("{'client_secret': 'xyz', 'qty': 5}", f"{{'client_secret': '{MASK}', 'qty': 5}}"),
    ('{\\"token\\": \\"abc\\", \\"n\\": 1}', f'{{\\"token\\": \\"{MASK}\\", \\"n\\": 1}}'),
    ("Cookie: sid=abc; theme=dark\nnext line", f"Cookie: {MASK}\nnext line"),
    ("mpin=1234 totp=556677 pin: 0000", f"mpin={MASK} totp={MASK} pin: {MASK}"),
    ("otpCode=123456 userPIN=42", f"otpCode={MASK} userPIN={MASK}"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
        f"-----BEGIN RSA PRIVATE KEY-----{MASK}-----END RSA PRIVATE KEY-----",
    ),
]

UNCHANGED_TEXT = [
    "order placed for RELIANCE quantity 10",
    "order rejected: insufficient margin",
    "price: 2500.5 qty=10 side=BUY",
    "2024-05-01T10:00:00.123456+05:30",
    "max_tokens=100 token_count=3 tokens_used=7",
    "instrument_token=256265 exchange_token=1001 symboltoken=3045",
    "spinner=on pinned=true footprint=2 author=ann",
    "https://example.com:8443/path?x=1#frag",
    "contact ops@example.com: urgent",
    "Basic validation failed",
    "the bearer of bad news",
    "password:",
    "password=",
    "ratio 3:2 and 1=1",
    "https://host.example:8080/path@handle",
    "with password ok: true",
    "('symbol', 'NIFTY'), ('qty', 5)",
    "Basic authentication required",
    "",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_detected(key: str) -> None:
    """Each secret key spelling is recognised."""
    assert Redactor().is_sensitive_key(key)


@pytest.mark.parametrize("key", PUBLIC_KEYS)
def test_public_keys_are_kept(key: str) -> None:
    """Keys that merely resemble secret names are not treated as secrets."""
    assert not Redactor().is_sensitive_key(key)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_values_are_masked_in_mappings(key: str) -> None:
    """A value stored under a secret key becomes the mask."""
    assert Redactor()({key: "v", "user": "bob"}) == {key: MASK, "user": "bob"}


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_masked_in_text(key: str) -> None:
    """A ``key=value`` pair with a secret key has its value masked in free text."""
    assert redact_text(f"x=1 {key}=v4lue y=2") == f"x=1 {key}={MASK} y=2"


@pytest.mark.parametrize("key", PUBLIC_KEYS)
def test_public_keys_are_kept_in_text(key: str) -> None:
    """A ``key=value`` pair with a public key is left alone in free text."""
    assert redact_text(f"{key}=v4lue") == f"{key}=v4lue"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", MASK),
        (0, MASK),
        (False, MASK),
        (["a", "b"], MASK),
        ({"nested": "dict"}, MASK),
    ],
)
def test_masked_value_kinds(value: object, expected: object) -> None:
    """Any value under a secret key is masked, except ``None`` which stays ``None``."""
    assert Redactor()({"password": value}) == {"password": expected}


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_rules(text: str, expected: str) -> None:
    """Secrets inside free text are masked and the rest of the text is kept."""
    assert redact_text(text) == expected


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_rules_are_idempotent(text: str, expected: str) -> None:
    """Scrubbing scrubbed text changes nothing."""
    assert redact_text(expected) == expected


@pytest.mark.parametrize("text", UNCHANGED_TEXT)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    """Text with no secrets comes back identical."""
    assert redact_text(text) == text


def test_text_without_candidates_is_returned_as_is() -> None:
    """The fast path returns the very same string object."""
    text = "order placed for RELIANCE quantity 10 at 2500.50"
    assert redact_text(text) is text


@pytest.mark.parametrize(
    ("key", "value"),
    [("Bearer", "abc123def456"), ("BEARER", "abc123def456"), ("Basic", "dXNlcjpwYXNz")],
)
def test_auth_scheme_case_is_kept(key: str, value: str) -> None:
    """The scheme keeps its spelling while the credential is masked."""
    assert redact_text(f"{key} {value}") == f"{key} {MASK}"


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000 + "://x:y z@",
        "password=" * 25_000,
        'password="' * 25_000,
        "Cookie: " * 25_000,
        'password=\\"' * 25_000,
        "token:" + " " * 200_000 + "x",
        "1" * 200_000 + ":" + "A" * 29,
        "Bearer " * 30_000,
        "-----BEGIN PRIVATE KEY-----" * 8_000,
        "x" * 200_000 + "token=1",
    ],
    ids=lambda text: repr(text[:12]),
)
def test_adversarial_text_is_scrubbed_in_linear_time(text: str) -> None:
    """Long hostile inputs finish quickly (quadratic scanning would take seconds)."""
    started = time.perf_counter()
    redact_text(text)
    assert time.perf_counter() - started < 2.0


def test_nested_structures_are_scrubbed() -> None:
    """Keys and strings are scrubbed at every depth of dicts, lists and tuples."""
    value = {
        "a": [{"password": "x", "n": 1}, ("token=abc", 2.5)],
        "b": {"c": {"apiKey": "k", "note": f"bot {BOT_TOKEN}"}},
    }
    assert Redactor()(value) == {
        "a": [{"password": MASK, "n": 1}, (f"token={MASK}", 2.5)],
        "b": {"c": {"apiKey": MASK, "note": f"bot 123456789:{MASK}"}},
    }


def test_input_is_not_mutated() -> None:
    """The input structure is left exactly as it was."""
    value: dict[str, Any] = {"password": "x", "items": [{"token": "t"}, "token=abc"]}
    before = copy.deepcopy(value)
    result = Redactor()(value)
    assert value == before
    assert result is not value


Point = namedtuple("Point", ["x", "secret_note"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (("token=a", 1), (f"token={MASK}", 1)),
        ({"token=a", "b"}, {f"token={MASK}", "b"}),
        (frozenset({"token=a"}), frozenset({f"token={MASK}"})),
        (Point("token=a", 2), Point(f"token={MASK}", 2)),
        (OrderedDict(pin=1, b=2), {"pin": MASK, "b": 2}),
        ({1: "token=a", None: 2}, {1: f"token={MASK}", None: 2}),
        (b"token=abc&x=1", f"token={MASK}&x=1".encode()),
        (b"\xff\xfe token=abc", b"\xff\xfe token=" + MASK.encode()),
        (bytearray(b"pwd=1"), bytearray(f"pwd={MASK}".encode())),
    ],
)
def test_container_kinds(value: object, expected: object) -> None:
    """Containers keep their kind (mappings become dicts) and bytes are scrubbed as text."""
    result = Redactor()(value)
    assert result == expected
    assert type(result) is type(expected)


def test_bytearray_result_is_a_copy() -> None:
    """A bytearray is copied even when nothing is masked."""
    value = bytearray(b"nothing to see")
    result = Redactor()(value)
    assert result == value
    assert result is not value


def test_string_keys_are_scrubbed() -> None:
    """Dict keys get the text rules too."""
    key = f"https://api.telegram.org/bot{BOT_TOKEN}/getMe"
    assert Redactor()({key: 1}) == {f"https://api.telegram.org/bot123456789:{MASK}/getMe": 1}


def test_opaque_objects_pass_through() -> None:
    """Objects that are not strings, bytes or containers are returned unchanged."""
    marker = object()
    error = ValueError("token=abc")
    result = Redactor()([marker, error])
    assert isinstance(result, list)
    assert result[0] is marker
    assert result[1] is error


def test_cycles_are_replaced() -> None:
    """A container that contains itself is cut with the cycle marker."""
    loop: list[object] = ["token=a"]
    loop.append(loop)
    table: dict[str, object] = {}
    table["self"] = table
    assert Redactor()(loop) == [f"token={MASK}", CYCLE_MARKER]
    assert Redactor()(table) == {"self": CYCLE_MARKER}


def test_shared_references_are_not_cycles() -> None:
    """The same container appearing twice side by side is scrubbed twice."""
    shared = {"pin": 1}
    assert Redactor()([shared, shared]) == [{"pin": MASK}, {"pin": MASK}]


def test_very_deep_nesting_is_masked() -> None:
    """Structures nested beyond the depth limit are masked rather than returned unscrubbed."""
    value: object = "token=abc"
    for _ in range(200):
        value = [value]
    assert "abc" not in json.dumps(Redactor()(value))


class _BrokenMapping(Mapping[str, str]):
    """A mapping whose iteration fails."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("broken")

    def __len__(self) -> int:
        return 1


def test_failures_mask_instead_of_raising() -> None:
    """A value that cannot be walked is replaced by the mask."""
    assert Redactor()(_BrokenMapping()) == MASK


def test_str_subclass_is_scrubbed_as_plain_str() -> None:
    """A str subclass comes back as a plain scrubbed str."""

    class Text(str):
        __slots__ = ()

        def __str__(self) -> str:
            raise RuntimeError("no")

    result = Redactor()(Text("token=abc"))
    assert result == f"token={MASK}"
    assert type(result) is str


@pytest.mark.parametrize(
    ("key", "text"),
    [("AccountNo", "acct"), ("x-account-no", "acct"), ("broker_account_no", "acct")],
)
def test_extra_keys(key: str, text: str) -> None:
    """Extra keys are matched like built-in fragments, in mappings and in text."""
    redactor = Redactor(extra_keys=["account_no"])
    assert redactor({key: text}) == {key: MASK}
    assert redactor.redact_text(f"{key}={text}") == f"{key}={MASK}"
    assert Redactor()({key: text}) == {key: text}


def test_extra_keys_accept_any_iterable() -> None:
    """A generator of extra keys is read once and fully."""
    redactor = Redactor(extra_keys=(key for key in ["broker_id", "pan"]))
    assert redactor({"broker_id": 1, "pan": "X", "panel": "y"}) == {
        "broker_id": MASK,
        "pan": MASK,
        "panel": MASK,
    }


@pytest.mark.parametrize("mask", ["***", r"\1\g<0>", "<hidden>"])
def test_custom_mask(mask: str) -> None:
    """A custom mask is used literally everywhere, even with regex metacharacters."""
    redactor = Redactor(mask=mask)
    assert redactor.mask == mask
    assert redactor({"token": "x"}) == {"token": mask}
    assert redactor.redact_text(f"bot {BOT_TOKEN}") == f"bot 123456789:{mask}"
    assert redactor.redact_text("postgresql://u:p@h/d") == f"postgresql://u:{mask}@h/d"
    assert redactor.redact_text("password=x") == f"password={mask}"


def test_processor_scrubs_event_dict() -> None:
    """The processor masks secret keys and scrubs the event, nested values and exception."""
    processor = RedactProcessor()
    event_dict = {
        "event": f"polling https://api.telegram.org/bot{BOT_TOKEN}/getUpdates",
        "password": "hunter2",
        "user_id": 7,
        "exception": "Traceback ...\nhttpx.ConnectError: token=abc123",
        "params": {"mpin": "1234", "symbol": "NIFTY"},
    }
    before = copy.deepcopy(event_dict)
    result = processor(None, "info", event_dict)
    assert result == {
        "event": f"polling https://api.telegram.org/bot123456789:{MASK}/getUpdates",
        "password": MASK,
        "user_id": 7,
        "exception": f"Traceback ...\nhttpx.ConnectError: token={MASK}",
        "params": {"mpin": MASK, "symbol": "NIFTY"},
    }
    assert event_dict == before


def test_processor_also_scrubs_single_values() -> None:
    """Called with one value the processor behaves like a Redactor."""
    processor = RedactProcessor()
    assert processor({"token": "x"}) == {"token": MASK}
    assert processor(value="token=x") == f"token={MASK}"


def test_processor_keeps_other_entries_when_one_fails() -> None:
    """A value that cannot be scrubbed is masked and the rest of the event survives."""
    result = RedactProcessor()(None, "error", {"event": "boom", "bad": _BrokenMapping()})
    assert result == {"event": "boom", "bad": MASK}


def test_processor_in_structlog_chain() -> None:
    """Rendered output of a real structlog chain contains no secrets, tracebacks included."""
    output = structlog.testing.CapturingLogger()
    log = structlog.wrap_logger(
        output,
        processors=[
            structlog.processors.format_exc_info,
            RedactProcessor(),
            structlog.processors.JSONRenderer(),
        ],
    )
    try:
        raise ConnectionError(f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage failed")
    except ConnectionError:
        log.exception("send failed", smtp_password="p4ss", headers={"Cookie": "sid=1"})
    (call,) = output.calls
    rendered = call.args[0]
    assert BOT_SECRET not in rendered
    assert "p4ss" not in rendered
    assert "sid=1" not in rendered
    data = json.loads(rendered)
    assert data["smtp_password"] == MASK
    assert f"bot123456789:{MASK}/sendMessage" in data["exception"]


_TOKEN_CHARS = string.ascii_letters + string.digits + "_-"
_SECRET_CHARS = string.ascii_letters + string.digits

bot_tokens = st.builds(
    lambda bot_id, secret: f"{bot_id}:{secret}",
    st.integers(min_value=10**7, max_value=10**10),
    st.text(alphabet=_TOKEN_CHARS, min_size=35, max_size=35),
)
passwords = st.text(alphabet=_SECRET_CHARS, min_size=10, max_size=24).map(lambda s: f"Pw{s}")
_PIECES = [*"ab1:=@/ \"'\\&;\n?-._", "token", "bot", "12345678", "password", "Bearer ", "Basic "]
_PIECES += ["Cookie: ", "://", "A" * 35, DEFAULT_MASK]
pieced_text = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)
noise = st.one_of(st.text(max_size=20), pieced_text)
secret_keys = st.sampled_from(SECRET_KEYS)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.text(alphabet="\x00ab:=@/ "),
    st.binary(max_size=20),
)
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
        st.frozensets(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
    ),
    max_leaves=20,
)


def _carriers(secret: str, kind: str) -> st.SearchStrategy[object]:
    """Ways of embedding ``secret`` (a password, or a bot token) in a log value."""
    if kind == "token":
        return st.one_of(
            st.builds(lambda a, b: f"{a}{secret}{b}", noise, noise),
            st.builds(lambda a, b: f"{a}{TELEGRAM_API}/bot{secret}/getMe{b}", noise, noise),
            st.builds(lambda a: f"{a} {secret}".encode(), noise),
            st.just({"telegram": {"bot_token": secret}}),
        )
    return st.one_of(
        st.builds(lambda a, b, k: f"{a} {k}={secret}{b}", noise, noise, secret_keys),
        st.builds(lambda a, b: f'{a}{{"password": "{secret}"}}{b}', noise, noise),
        st.builds(lambda a: f"{a} postgresql://trader:{secret}@db:5432/x", noise),
        st.builds(lambda k: {k: secret}, secret_keys),
        st.builds(lambda k: [{"nested": ({k: secret},)}], secret_keys),
        st.builds(lambda a: f"{a}Authorization: Bearer {secret}".encode(), noise),
    )


def _dump(value: object) -> str:
    """Render any value as JSON with generous limits."""
    return json.dumps(
        to_jsonable(value, max_depth=64, max_items=10_000, max_str=1_000_000),
        allow_nan=False,
        ensure_ascii=False,
    )


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(structures)
def test_redactor_never_raises(value: object) -> None:
    """Arbitrary nested values are scrubbed without raising, by both entry points."""
    Redactor()(value)
    RedactProcessor()(None, "info", {"event": "x", "value": value})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), structures, st.sampled_from(["password", "token"]))
def test_redactor_never_leaks_secrets(data: st.DataObject, background: object, kind: str) -> None:
    """A generated password or bot token never survives anywhere in the scrubbed output."""
    secret = data.draw(bot_tokens if kind == "token" else passwords)
    secret_part = secret.split(":")[1] if kind == "token" else secret
    assume(secret_part not in _dump(background))
    carrier = data.draw(_carriers(secret, kind))
    value = data.draw(
        st.sampled_from(
            [
                carrier,
                [background, carrier],
                {"context": background, "detail": carrier},
                (background, {"deep": [carrier]}),
            ]
        )
    )
    assert secret_part not in _dump(Redactor()(value))
    assert secret_part not in _dump(RedactProcessor()(None, "error", {"event": carrier}))


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(exclude_characters=":=")))
def test_text_without_candidates_is_never_changed(text: str) -> None:
    """Text without ``:``, ``=``, a Bearer/Basic scheme, a PEM header, a JWT or a quoted
    ``'key', value`` pair is never changed."""
    lowered = text.lower()
    assume("bearer" not in lowered and "basic" not in lowered and "PRIVATE KEY" not in text)
    assume("eyJ" not in text and not ("," in text and ("'" in text or '"' in text)))
    assert redact_text(text) == text


@settings(max_examples=300)
@given(pieced_text)
def test_redact_text_is_idempotent(text: str) -> None:
    """Applying the text rules twice gives the same result as applying them once."""
    once = redact_text(text)
    assert redact_text(once) == once


@pytest.mark.parametrize("separator", ["%3A", "%3a"])
def test_percent_encoded_bot_token_in_url(separator: str) -> None:
    """A bot token whose colon was percent-encoded in a URL is scrubbed too."""
    token_tail = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    text = f"GET https://api.telegram.org/bot123456789{separator}{token_tail}/sendMessage 200"
    scrubbed = redact_text(text)
    assert token_tail not in scrubbed
    assert scrubbed.startswith(f"GET https://api.telegram.org/bot123456789{separator}")
    assert scrubbed.endswith("/sendMessage 200")


def test_known_values_are_masked_wherever_they_stand() -> None:
    """A known secret is masked in free text, in keys and nested values, with no key name
    before it; regex characters in it are taken literally; a value too short to look for is
    left alone, and so is text that merely resembles a value."""
    key = "kite_9fQ2.xL7+vR4"
    redactor = Redactor(values=[key, "abc", ""])
    assert redactor.redact_text(f"placing order with key {key} now") == (
        "placing order with key [REDACTED] now"
    )
    assert redactor({"note": [f"x{key}y"], key: 1}) == {"note": ["x[REDACTED]y"], "[REDACTED]": 1}
    assert redactor.redact_text("kite_9fQ2axL7+vR4 abc") == "kite_9fQ2axL7+vR4 abc"
    assert Redactor().redact_text(f"key {key}") == f"key {key}"
