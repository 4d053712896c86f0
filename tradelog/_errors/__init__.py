"""Error tracking: capture exceptions into ``error_logs``, group them, resolve them.

* :mod:`tradelog._errors.pipeline` - :class:`ErrorCapture`: queue, background writer,
  synchronous crash writes, spill and replay (built and owned by the runtime).
* :mod:`tradelog._errors.guard` - :class:`Guard`, for multiprocessing children and other code
  whose exceptions never reach a process hook.
* :mod:`tradelog._errors.hooks` - ``sys.excepthook``, ``threading.excepthook``,
  ``sys.unraisablehook`` and asyncio handlers, each chained to the one installed before it.
* :mod:`tradelog._errors.record` - what a row contains (pure).
* :mod:`tradelog._errors.fingerprint` - how occurrences are grouped (pure).
* :mod:`tradelog._errors.store` - writing rows and ``service_status`` counters.
* :mod:`tradelog._errors.spill` - files holding rows the database refused.
* :mod:`tradelog._errors.alerts` - the ``error`` notification, throttled per fingerprint.
* :mod:`tradelog._errors.workflow` - listing, grouping, resolving and purging (user-scoped).
"""
