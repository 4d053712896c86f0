"""Notifications: preferences, quiet hours, a durable outbox, Telegram, email and the inbox.

How a notification travels::

    tradelog.notify(user_id, type, level, title, message)          api.py
      -> preferences read now, policy decides per channel          preferences.py, policy.py
      -> notifications row (= in-app inbox entry) + one outbox     dispatch.py
         delivery per external channel, in the caller's
         transaction when ``session=`` is given; one NOTIFY     listen.py
         per committed transaction that queued deliveries
    delivery worker (background thread or ``tradelog worker``)     worker.py
      -> woken in-process, by LISTEN (PostgreSQL), or by polling   wakeup.py, outbox_listen.py
      -> claims due deliveries in batches (one statement,          outbox.py
         FOR UPDATE SKIP LOCKED, lease)
      -> digests deferred ones, renders                            formatting.py
      -> sends: Telegram (shared DB rate limiter), email           channels/, ratelimit.py
      -> records sent / retry with backoff / failed + reason
    inbox: list, unread count, mark read                           inbox.py

Modules: :mod:`~tradelog._notify.policy` and :mod:`~tradelog._notify.formatting` are pure
(no I/O, ``now`` passed in); everything else talks to the database or a server.
"""
