"""Structured logging: the pipeline behind ``tradelog.configure`` and ``tradelog.get_logger``.

Caller side (microseconds, never raises):

* :mod:`~tradelog._logs.loggers` - the structlog bound logger class (reconfigurable level
  filter) and the console output it wraps;
* :mod:`~tradelog._logs.processors` - the last processor: snapshot the event, call exception
  observers, append to the writer's queue (or write it on the spot when the queue is full);
* :mod:`~tradelog._logs.stdlib` - the handler that brings ``logging`` records into the same
  pipeline.

Writer side (background threads, see :mod:`~tradelog._logs.writer`):

* :mod:`~tradelog._logs.rows` - redaction (:mod:`~tradelog._logs.redact`), sanitising
  (:mod:`~tradelog._logs.sanitize`) and encoding into a ``service_logs`` row and a JSONL line;
* :mod:`~tradelog._logs.file_sink` - per-user files shared safely by processes, rotation;
* :mod:`~tradelog._logs.db_sink` - bulk inserts, bisecting bad rows, spooling and replay;
* :mod:`~tradelog._logs.spool` - the spool and dead-letter files;
* :mod:`~tradelog._logs.stats` - counters, published for ``tradelog status``.

Reading: :mod:`~tradelog._logs.query` (user-scoped queries, paging, following).
"""
