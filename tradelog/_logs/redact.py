"""Scrub secrets out of log values before they reach any sink.

Two independent rule sets run on every value:

**Key rules.** A mapping entry whose key names a secret has its value replaced by the mask
(``None`` stays ``None``), at any depth of dicts, lists, tuples and sets. A key is normalised
twice: to a *compact* form (lower case, only ``a-z0-9``, so ``X-Api-Key``, ``api_key`` and
``apiKey`` all become ``apikey``) and to its *words* (split on separators and camelCase).

* Secret if the compact form contains one of: ``password``, ``passwd``, ``passphrase``, ``pwd``,
  ``secret``, ``apikey``, ``accesskey``, ``privatekey``, ``authorization``, ``authheader``,
  ``cookie``, ``sessionid``, ``sessionkey``, ``credential``, ``mpin``, ``totp``, ``jwt``,
  ``authcode``, ``signingkey``, ``encryptionkey``, ``hmackey``, ``twofa``, ``2fa``
  (which covers ``client_secret``, ``smtp_password``, ``credentials``, ``Set-Cookie``, ...).
* Secret if one of the words is ``pin``, ``otp``, ``pass``, ``pw``, ``cred`` or ``creds``
  (``pin``, ``user_pin``, ``pinCode``, ``otp_code``, ``db_pw``; but not ``spinner``, ``pinned``,
  ``pincode``, ``footprint`` or ``bypass``), or the last word is ``auth`` (``auth``,
  ``basic_auth``; but not ``auth_method`` or ``author``).
* Secret if the compact form contains ``token`` (``access_token``, ``bot_token``,
  ``csrftoken``, ``tokens``), **except** when the rest of the key only describes the token:
  counts and limits (``max_tokens``, ``token_count``, ``prompt_tokens``, ``tokens_used``),
  token metadata (``token_type``, ``token_expires_at``) and broker instrument identifiers
  (``instrument_token``, ``exchange_token``, ``symboltoken``), which are public numbers that
  trading logs need. A key with any other secret fragment (``secret_token_count``) stays secret.
* ``extra_keys`` add fragments matched like the first group (compact form, anywhere in the key).
* A two-item list or tuple whose first item is a secret key name is a pair: its second item is
  masked (header lists ``[("Authorization", "Token x"), ("X-Api-Key", "y")]``).

**Text rules.** Every string (values at any depth, string dict keys, the structlog ``event`` and
``exception`` text) is searched for secrets embedded in free text; only the secret part is
replaced so the line stays readable:

* ``key=value`` / ``key: value`` / ``key => value`` pairs (query strings, JSON or repr text,
  headers, Ruby hashes) whose key passes the key rules, also written as two words whose last
  is a noun such as ``key``, ``code`` or ``token`` (``API Key: x``, ``auth code = x``):
  ``?token=abc&x=1`` becomes ``?token=[REDACTED]&x=1``. Quoted values keep their quotes; an
  unquoted value runs to the next quote, the end of the line or the next ``key=``/``key:``
  pair, so passwords with spaces or punctuation are masked whole (``password=Tr0ub;REST``,
  ``passphrase: correct horse battery``); an auth scheme word is kept
  (``Authorization: Bearer [REDACTED]``); a ``Cookie:``/``Set-Cookie:`` header value is
  masked to the end of the line.
* Quoted ``'key', value`` pairs with a secret key, as exception ``args`` and header lists print:
  ``BrokerError('api_key', 'x')`` becomes ``BrokerError('api_key', '[REDACTED]')``.
* Telegram bot tokens anywhere, including Bot API URLs: ``bot123456:AAE...`` becomes
  ``bot123456:[REDACTED]`` (the numeric bot id is public and helps tell bots apart).
* Passwords in URLs: ``postgresql://user:pw@host`` becomes ``postgresql://user:[REDACTED]@host``,
  also when the password holds ``@`` or a raw ``/``.
* ``Bearer <token>`` / ``Basic <base64>`` credentials (any case) when the credential looks
  encoded (eight or more token characters including a digit, one of ``-._~+/=`` or an inner
  capital) or is sixteen characters or longer, so prose such as "Basic validation failed" is
  left alone.
* JSON Web Tokens (``eyJ...`` ``.`` ``eyJ...`` ``.`` signature), wherever they stand.
* PEM private key blocks and PGP private key blocks.

Strings without ``:``, ``=``, ``bearer``, ``basic``, ``PRIVATE KEY``, ``eyJ`` or a comma next
to a quote skip the text rules after a few substring checks, and the pair rules only run on text
containing a piece of a secret key name (``pass``, ``token``, ``key``, ``auth``, ...).

Mappings come back as ``dict``; lists, tuples (named tuples included), sets and bytes keep
their type. Other objects pass through unchanged (they are not copied or stringified); run
:func:`tradelog._logs.sanitize.to_jsonable` first when their text must be scrubbed too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, overload

from tradelog._logs.sanitize import JSONValue, to_jsonable

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "CYCLE_MARKER",
    "DEFAULT_MASK",
    "REDACT_MARGIN",
    "VALUE_MIN",
    "RedactProcessor",
    "Redactor",
    "redact_jsonable",
    "redact_text",
    "redact_value",
]

DEFAULT_MASK: Final = "[REDACTED]"
"""Replacement for secret values."""

VALUE_MIN: Final = 6
"""Known secret values (``Redactor(values=...)``) shorter than this are not looked for."""

CYCLE_MARKER: Final = "<cycle>"
"""Replaces a container that contains itself."""

REDACT_MARGIN: Final = 4096
"""Characters beyond a cut that are still scrubbed before the cut is made (see
:func:`redact_jsonable`): a secret shorter than this is never split by a cut."""

_MAX_DEPTH: Final = 64
"""Containers nested deeper than this are replaced by the mask as a whole."""

_KEY_CACHE_SIZE: Final = 4096
"""Classified keys remembered per :class:`Redactor` before the cache is reset."""

_CACHED_KEY_LENGTH: Final = 128
"""Longer keys (typically runs of text before an ``=``) are classified but not remembered."""

_FRAGMENTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
    "authheader",
    "cookie",
    "sessionid",
    "sessionkey",
    "credential",
    "mpin",
    "totp",
    "jwt",
    "authcode",
    "signingkey",
    "encryptionkey",
    "hmackey",
    "twofa",
    "2fa",
)
_SECRET_WORDS: Final = frozenset({"pin", "otp", "pass", "pw", "cred", "creds"})
_PHRASE_NOUNS: Final = frozenset({"key", "token", "code", "phrase", "secret", "id", "pin", "word"})
"""Last words of two-word key names in free text (``API Key: ...``, ``auth code: ...``)."""
_DESCRIPTIVE_WORDS: Final = (
    "count|counts|max|min|num|number|total|limit|limits|used|usage|remaining|budget|len|length|"
    "size|prompt|completion|input|output|type|expiry|expires|expire|expiration|at|in|ttl|age|"
    "instrument|exchange|symbol"
)
_TOKEN_EXEMPT: Final = re.compile(
    rf"(?:(?:{_DESCRIPTIVE_WORDS})+tokens?(?:{_DESCRIPTIVE_WORDS})*|tokens?(?:{_DESCRIPTIVE_WORDS})+)"
)
_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_WORD: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

_KEY_HINTS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "cookie",
    "session",
    "credential",
    "pin",
    "otp",
    "pw",
    "cred",
    "jwt",
    "2fa",
    "twofa",
)
"""Lower-case substrings of every built-in secret key spelling; text without one has no pairs."""
_KV_REVERSED: Final = re.compile(r"[:=][ \t]*(?:[\"']\\?)?([\w.-]+(?:[ \t][\w.-]+)?)")
"""A separator and the key before it (one word, or two such as ``API Key``), matched in the
reversed text (anchored on the separator); ``=>`` separates too (``'password' => 'x'``)."""
_QUOTED_PAIR: Final = re.compile(r"""(["'])([A-Za-z][\w. -]{0,63})\1[ \t]*,[ \t]*""")
"""A quoted key followed by a comma: the first half of ``('api_key', 'x')``, an exception's
``args`` or a header list ``[("Authorization", "Token x")]``."""
_PAIR_KEY: Final = re.compile(r"[A-Za-z][\w.-]{0,63}")
"""What a key looks like as the first item of a two-item sequence (a header pair)."""
_SPACES: Final = re.compile(r"[ \t]*")
_SCHEME_WORD: Final = re.compile(
    r"(?:bearer|basic|digest|token|bot|negotiate|ntlm|apikey)[ \t]+(?=\S)", re.IGNORECASE
)
_BARE_VALUE: Final = re.compile(r"[^\s&,;\"'<>{}\[\]()]*")
_BARE_SECRET_END: Final = re.compile(r"""["'\r\n]|[\s,;&]+["']?[\w.-]+["']?[ \t]*(?:=|:(?!//))""")
"""Where an unquoted secret value ends: a quote, the line end, or the next ``key=``/``key:``
pair (``password=Tr0ub;REST user=bob`` masks ``Tr0ub;REST``; ``passphrase: correct horse``
masks both words)."""
_DQ_BODY: Final = re.compile(r'(?:[^"\\\r\n]|\\.)*')
_SQ_BODY: Final = re.compile(r"(?:[^'\\\r\n]|\\.)*")
_LINE_END: Final = re.compile(r"[^\r\n]*")

_BOT_TOKEN: Final = re.compile(r"([0-9]{6,12})(:|%3[Aa])[A-Za-z0-9_-]{30,}")
_BOT_TOKEN_HINT: Final = re.compile(r"(?::|%3[Aa])[A-Za-z0-9_-]{30}")
"""Anchored on the colon, so it scans long text much faster than :data:`_BOT_TOKEN`."""
_URL_USER: Final = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@\[\]]*:(?=[^\s]*@)"
)
"""``scheme://user:`` followed somewhere by an ``@``; see :meth:`Redactor._redact_urls`."""
_PORT_AND_PATH: Final = re.compile(r"[0-9]{1,5}(?:[/?#]|$)")
_WHITESPACE: Final = re.compile(r"\s")
_AUTH_SCHEME: Final = re.compile(
    r"\b(?P<scheme>bearer|basic)[ \t]+(?P<cred>[A-Za-z0-9._~+/-]{8,}=*)", re.IGNORECASE
)
_ENCODED_HINT: Final = re.compile(r"[0-9._~+/=-]|.[A-Z]")
_LONG_CREDENTIAL: Final = 16
"""A ``Bearer``/``Basic`` credential this long is masked even when it looks like a word."""
_JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
"""A JSON Web Token (header and payload are base64url JSON objects, so both start ``eyJ``)."""
_PEM_KEY: Final = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----).*?"
    r"(-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)


def _match_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Return where ``pattern`` (which may match empty) stops matching from ``pos``."""
    match = pattern.match(text, pos)
    return pos if match is None else match.end()


def _text_hint(key: str) -> str:
    """Return the longest word of an extra key: free text naming that key contains it."""
    return max(_words(key) or [_NON_ALNUM.sub("", key.lower())], key=len)


def _words(key: str) -> list[str]:
    """Split ``key`` into lower-case words on separators and camelCase boundaries."""
    return [word.lower() for word in _WORD.findall(key)]


class Redactor:
    """Return scrubbed copies of log values; see the module docstring for the rules.

    Instances are immutable after construction apart from an internal key cache and are safe to
    share between threads.
    """

    def __init__(
        self,
        *,
        extra_keys: Iterable[str] = (),
        mask: str = DEFAULT_MASK,
        values: Iterable[str] = (),
    ) -> None:
        """Precompile the key and text rules.

        ``extra_keys`` are additional secret key fragments, normalised like the built-in ones
        (``"account_no"`` also matches ``AccountNo`` and ``x-account-no``). In free text an
        extra key is only looked for where its longest word appears, so spell it with its word
        breaks (``"account_no"`` rather than ``"accountno"``). ``mask`` replaces every secret.
        ``values`` are known secrets (a broker's API key, the SMTP password) masked wherever
        they appear in text, with or without a key name before them; values shorter than
        :data:`VALUE_MIN` characters are not looked for (they would mask ordinary words).
        """
        extras = [
            key for key in (str(key) for key in extra_keys) if _NON_ALNUM.sub("", key.lower())
        ]
        fragments = set(_FRAGMENTS) | {_NON_ALNUM.sub("", key.lower()) for key in extras}
        self._mask = mask
        self._fragments = re.compile(
            "|".join(re.escape(fragment) for fragment in sorted(fragments, key=len, reverse=True))
        )
        self._hints = _KEY_HINTS + tuple(sorted({_text_hint(key) for key in extras}))
        self._key_cache: dict[str, tuple[str, bool]] = {}
        template = mask.replace("\\", "\\\\")
        self._bot_template = rf"\1\2{template}"
        self._pem_template = rf"\1{template}\2"
        known = sorted({v for v in values if isinstance(v, str) and len(v) >= VALUE_MIN}, key=len)
        self._values = (
            re.compile("|".join(re.escape(value) for value in reversed(known))) if known else None
        )
        self._value_template = template

    @property
    def mask(self) -> str:
        """The replacement text for secrets."""
        return self._mask

    def __call__(self, value: object) -> object:
        """Return a scrubbed copy of ``value``; never raises and never mutates ``value``.

        If scrubbing fails unexpectedly the whole value is replaced by the mask.
        """
        try:
            return self._scrub(value, 0, set())
        except Exception:
            return self._mask

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values stored under ``key`` are secrets (the key rules)."""
        return self._key_info(key)[1]

    def redact_text(self, text: str) -> str:
        """Apply the text rules to ``text``, keeping everything that is not a secret."""
        if self._values is not None:
            text = self._values.sub(self._value_template, text)
        if not (
            ":" in text
            or "=" in text
            or "%3" in text
            or "earer" in text
            or "asic" in text
            or "EARER" in text
            or "ASIC" in text
            or "PRIVATE KEY" in text
            or "eyJ" in text
            or ("," in text and ("'" in text or '"' in text))
        ):
            return text
        try:
            return self._redact_text(text)
        except Exception:
            return self._mask

    def _key_info(self, key: str) -> tuple[str, bool]:
        """Return ``key`` with the text rules applied and whether it names a secret (cached)."""
        cache = self._key_cache
        info = cache.get(key)
        if info is None:
            info = (self.redact_text(key), self._classify(key))
            if len(key) <= _CACHED_KEY_LENGTH:
                if len(cache) >= _KEY_CACHE_SIZE:
                    cache.clear()
                cache[key] = info
        return info

    def _has_key_hint(self, lower: str) -> bool:
        """Whether lower-cased text may contain a secret key name."""
        for hint in self._hints:  # noqa: SIM110 - a plain loop is twice as fast as any()
            if hint in lower:
                return True
        return False

    def _classify(self, key: str) -> bool:
        """Apply the key rules to ``key`` without caching."""
        compact = _NON_ALNUM.sub("", key.lower())
        if self._fragments.search(compact):
            return True
        if "token" in compact and _TOKEN_EXEMPT.fullmatch(compact) is None:
            return True
        words = _words(key)
        return bool(_SECRET_WORDS.intersection(words)) or (bool(words) and words[-1] == "auth")

    def _redact_text(self, text: str) -> str:
        """Apply the text rules; the caller has done the cheap pre-check."""
        lower = text.lower()
        if (":" in text or "=" in text) and self._has_key_hint(lower):
            text = self._redact_pairs(text)
        if "," in text and ("'" in text or '"' in text) and self._has_key_hint(lower):
            text = self._redact_quoted_pairs(text)
        if "eyJ" in text:
            text = _JWT.sub(self._mask.replace("\\", "\\\\"), text)
        if (":" in text or "%3" in text) and _BOT_TOKEN_HINT.search(text) is not None:
            text = _BOT_TOKEN.sub(self._bot_template, text)
        if "://" in text and "@" in text:
            text = self._redact_urls(text)
        if "PRIVATE KEY" in text:
            text = _PEM_KEY.sub(self._pem_template, text)
        if "bearer" in lower or "basic" in lower:
            text = _AUTH_SCHEME.sub(self._auth_replacement, text)
        return text

    def _auth_replacement(self, match: re.Match[str]) -> str:
        """Mask a ``Bearer``/``Basic`` credential that looks encoded or is long."""
        cred = match.group("cred")
        if len(cred) < _LONG_CREDENTIAL and _ENCODED_HINT.search(cred) is None:
            return match.group(0)
        return f"{match.group('scheme')} {self._mask}"

    def _redact_urls(self, text: str) -> str:
        """Mask the password of ``scheme://user:password@host`` URLs.

        The password ends at the last ``@`` before the host part, as a URL parser reads it
        (``u:p@ss@h/db``); a password written with a raw ``/`` (``u:pa/ss@h``) ends at the
        first ``@`` after it, unless what precedes is a port and a path (``host:80/a@b``).
        """
        parts: list[str] = []
        done = 0
        for match in _URL_USER.finditer(text):
            start = match.end()
            if start < done or text.startswith(self._mask + "@", start):
                continue  # inside a masked part, or a password masked already
            space = _WHITESPACE.search(text, start)
            token_end = len(text) if space is None else space.start()
            netloc_end = token_end
            for stop in "/?#":
                found = text.find(stop, start, netloc_end)
                if found != -1:
                    netloc_end = found
            at = text.rfind("@", start, netloc_end)
            if at == -1:
                at = text.find("@", netloc_end, token_end)
                if at == -1 or _PORT_AND_PATH.match(text, start) is not None:
                    continue
            if at > start:
                parts.append(text[done:start])
                parts.append(self._mask)
                done = at
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def _secret_key_in(self, candidate: str) -> str | None:
        """The secret key a separator follows: the last word, or the last two words when they
        name a secret together (``API Key``, ``auth code``); None when neither does."""
        words = candidate.split()
        if not words:
            return None
        if self.is_sensitive_key(words[-1]):
            return words[-1]
        if len(words) == 2 and words[-1].lower() in _PHRASE_NOUNS:
            joined = "_".join(words)
            if self.is_sensitive_key(joined):
                return joined
        return None

    def _redact_quoted_pairs(self, text: str) -> str:
        """Mask the value after a quoted secret key and a comma: ``('api_key', 'x')``."""
        parts: list[str] = []
        done = 0
        for match in _QUOTED_PAIR.finditer(text):
            if match.start() < done or self._secret_key_in(match.group(2)) is None:
                continue
            start = match.end()
            if start < len(text) and text[start] in "\"'":
                begin = start + 1
                body = _DQ_BODY if text[start] == '"' else _SQ_BODY
                end = _match_end(body, text, begin)
                scheme = _SCHEME_WORD.match(text, begin, end)
                if scheme is not None:
                    begin = scheme.end()
            else:
                begin, end = start, _match_end(_BARE_VALUE, text, start)
            if end > begin:
                parts.append(text[done:begin])
                parts.append(self._mask)
                done = end
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def _redact_pairs(self, text: str) -> str:
        """Mask the values of ``key=value`` / ``key: value`` pairs with secret keys.

        Pairs are handled left to right; a separator inside an already masked value is skipped,
        which keeps the work linear in the length of the text.
        """
        size = len(text)
        found = [
            (size - match.start(), match.group(1)) for match in _KV_REVERSED.finditer(text[::-1])
        ]
        parts: list[str] = []
        done = 0
        for separator, reversed_key in reversed(found):
            if separator <= done:
                continue
            key = self._secret_key_in(reversed_key[::-1])
            if key is None:
                continue
            header = text[separator - 1] == ":" and "cookie" in key.lower()
            start = separator
            if text[separator - 1] == "=" and text[separator : separator + 1] == ">":
                start += 1  # 'password' => 'x'
            start, end = self._value_span(text, _match_end(_SPACES, text, start), header)
            if end > start:
                parts.append(text[done:start])
                parts.append(self._mask)
                done = end
        if not parts:
            return text
        parts.append(text[done:])
        return "".join(parts)

    def _value_span(self, text: str, start: int, to_line_end: bool) -> tuple[int, int]:
        """Return the span of the secret value that begins at ``start``.

        ``to_line_end`` makes an unquoted value run to the end of the line (``Cookie:`` headers
        hold several ``name=value`` pairs).
        """
        if start >= len(text):
            return start, start
        first = text[start]
        if first == "\\" and text[start + 1 : start + 2] in ('"', "'"):
            quote = text[start : start + 2]
            begin = start + 2
            close = text.find(quote, begin)
            end = close if close != -1 else _match_end(_LINE_END, text, begin)
        elif first in "\"'":
            begin = start + 1
            body = _DQ_BODY if first == '"' else _SQ_BODY
            end = _match_end(body, text, begin)
        else:
            scheme = _SCHEME_WORD.match(text, start)
            begin = scheme.end() if scheme is not None else start
            if to_line_end:
                return begin, _match_end(_LINE_END, text, begin)
            stop = _BARE_SECRET_END.search(text, begin)
            end = len(text) if stop is None else stop.start()
            while end > begin and text[end - 1] in " \t":
                end -= 1
            return begin, end
        scheme = _SCHEME_WORD.match(text, begin, end)
        if scheme is not None:
            begin = scheme.end()
        return begin, end

    def _scrub(self, value: object, depth: int, active: set[int]) -> object:
        """Scrub ``value`` found ``depth`` containers deep; ``active`` holds the open ids."""
        if isinstance(value, str):
            return self.redact_text(value if type(value) is str else str.__str__(value))
        kind = type(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if isinstance(value, bytes | bytearray):
            return self._scrub_bytes(value)
        if not isinstance(value, Mapping | list | tuple | set | frozenset):
            return value
        if depth >= _MAX_DEPTH:
            return self._mask
        ident = id(value)
        if ident in active:
            return CYCLE_MARKER
        active.add(ident)
        try:
            return self._scrub_container(value, depth + 1, active)
        finally:
            active.discard(ident)

    def _scrub_container(
        self,
        value: Mapping[Any, Any] | list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any],
        depth: int,
        active: set[int],
    ) -> object:
        """Scrub the items of a container into a new one of the same kind (mappings -> dict)."""
        if isinstance(value, Mapping):
            result: dict[Any, Any] = {}
            for key, item in value.items():
                new_key, new_item = self._scrub_item(key, item, depth, active)
                result[new_key] = new_item
            return result
        items = [self._scrub(item, depth, active) for item in value]
        if len(items) == 2 and self._is_secret_pair(value):
            items[1] = None if items[1] is None else self._mask
        if isinstance(value, list):
            return items
        if isinstance(value, set):
            return set(items)
        if isinstance(value, frozenset):
            return frozenset(items)
        if type(value) is not tuple and hasattr(value, "_make"):
            try:
                return value._make(items)
            except Exception:
                return tuple(items)
        return tuple(items)

    def _is_secret_pair(self, value: Any) -> bool:
        """Whether a two-item list or tuple is a ``(secret key, value)`` pair (a header)."""
        if isinstance(value, set | frozenset):
            return False
        first = next(iter(value))
        return (
            isinstance(first, str)
            and _PAIR_KEY.fullmatch(first) is not None
            and self.is_sensitive_key(first)
        )

    def _scrub_item(
        self, key: object, item: object, depth: int, active: set[int]
    ) -> tuple[object, object]:
        """Scrub one mapping entry: string keys get the text rules; secret keys mask the value."""
        if not isinstance(key, str):
            return key, self._scrub(item, depth, active)
        new_key, secret = self._key_info(key if type(key) is str else str.__str__(key))
        if secret:
            return new_key, None if item is None else self._mask
        return new_key, self._scrub(item, depth, active)

    def _scrub_bytes(self, value: bytes | bytearray) -> bytes | bytearray:
        """Apply the text rules to bytes (decoded as UTF-8, undecodable bytes kept as they are).

        Returns ``bytes`` for ``bytes`` and a new ``bytearray`` for a ``bytearray``.
        """
        text = bytes(value).decode("utf-8", "surrogateescape")
        scrubbed = self.redact_text(text)
        raw = scrubbed.encode("utf-8", "surrogateescape") if scrubbed != text else value
        return bytearray(raw) if isinstance(value, bytearray) else bytes(raw)


class RedactProcessor(Redactor):
    """A structlog processor that scrubs every entry of the event dict.

    Called as ``processor(logger, method_name, event_dict)`` it returns a new event dict in
    which secret keys are masked and every value (the ``event`` message, ``exception`` text,
    nested structures) is scrubbed; called with a single value it behaves like
    :class:`Redactor`. Place it after ``format_exc_info`` so rendered tracebacks are scrubbed.
    """

    @overload
    def __call__(self, value: object) -> object: ...

    @overload
    def __call__(
        self, logger: WrappedLogger, method_name: str, event_dict: EventDict
    ) -> EventDict: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Scrub an event dict (processor form) or a single value (redactor form)."""
        if len(args) == 3 and not kwargs:
            return self.process(args[2])
        return super().__call__(*args, **kwargs)

    def process(self, event_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Return a scrubbed copy of ``event_dict``; never raises."""
        result: dict[Any, Any] = {}
        try:
            entries = list(event_dict.items())
        except Exception:
            return {"event": self._mask}
        active: set[int] = set()
        for key, value in entries:
            try:
                new_key, new_value = self._scrub_item(key, value, 0, active)
            except Exception:
                new_key, new_value = key, self._mask
            result[new_key] = new_value
        return result


_DEFAULT: Final = Redactor()


def redact_text(s: str) -> str:
    """Apply the text rules (not the key rules) to ``s`` with the default mask."""
    return _DEFAULT.redact_text(s)


def redact_value(value: object) -> object:
    """Scrub ``value`` (key and text rules) with the default mask."""
    return _DEFAULT(value)


def redact_jsonable(
    value: object,
    *,
    max_str: int = 8192,
    max_depth: int = 8,
    max_items: int = 1000,
    redactor: Redactor | None = None,
) -> JSONValue:
    """A JSON-safe, scrubbed copy of ``value`` whose strings are cut to ``max_str`` characters.

    Redaction runs before the cut: strings are first made JSON-safe with ``max_str`` plus
    :data:`REDACT_MARGIN` characters, scrubbed, and only then cut, so a cut never leaves the
    beginning of a secret readable (a token split by a cut is no longer recognisable).
    """
    scrub = redactor or _DEFAULT
    wide = to_jsonable(
        value, max_depth=max_depth, max_items=max_items, max_str=max_str + REDACT_MARGIN
    )
    return to_jsonable(
        scrub(wide), max_depth=max_depth + 1, max_items=max_items + 1, max_str=max_str
    )
