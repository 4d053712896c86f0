"""Real local servers used by the test suite instead of mocks.

* :mod:`tests.support.fake_bot_api` - an HTTP server speaking the Telegram Bot API.
* :mod:`tests.support.smtp_server` - an aiosmtpd based SMTP server with TLS and AUTH.
"""
