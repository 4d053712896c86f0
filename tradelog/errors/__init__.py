"""Error tracking: capture exceptions into ``error_logs``, group them, resolve them.

* :mod:`tradelog.errors.capture` - the public :func:`capture_exception`, :func:`install`
  (called by ``tradelog.configure``), :func:`guard` for multiprocessing children and the
  active capture.
* :mod:`tradelog.errors.pipeline` - :class:`ErrorCapture`: queue, background writer,
  synchronous crash writes, spill and replay.
* :mod:`tradelog.errors.hooks` - ``sys.excepthook``, ``threading.excepthook``,
  ``sys.unraisablehook`` and asyncio handlers, each chained to the one installed before it.
* :mod:`tradelog.errors.record` - what a row contains (pure).
* :mod:`tradelog.errors.fingerprint` - how occurrences are grouped (pure).
* :mod:`tradelog.errors.store` - writing rows and ``service_status`` counters.
* :mod:`tradelog.errors.spill` - files holding rows the database refused.
* :mod:`tradelog.errors.alerts` - the ``error`` notification, throttled per fingerprint.
* :mod:`tradelog.errors.workflow` - listing, grouping, resolving and purging (user-scoped).
"""
