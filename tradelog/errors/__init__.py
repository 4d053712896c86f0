"""Error tracking: capture exceptions into ``error_logs``, group them, resolve them.

* :mod:`tradelog.errors.capture` - the capture pipeline (:class:`ErrorCapture`), the public
  :func:`capture_exception`, :func:`install` (called by ``tradelog.configure``) and
  :func:`guard` for multiprocessing children.
* :mod:`tradelog.errors.hooks` - ``sys.excepthook``, ``threading.excepthook``,
  ``sys.unraisablehook`` and asyncio handlers, each chained to the one installed before it.
* :mod:`tradelog.errors.record` - what a row contains (pure).
* :mod:`tradelog.errors.fingerprint` - how occurrences are grouped (pure).
* :mod:`tradelog.errors.store` - writing rows and ``service_status`` counters.
* :mod:`tradelog.errors.alerts` - the ``error`` notification, throttled per fingerprint.
* :mod:`tradelog.errors.workflow` - listing, grouping, resolving and purging (user-scoped).
"""
