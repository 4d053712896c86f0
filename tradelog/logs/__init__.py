"""Structured logging: the pipeline behind ``tradelog.configure`` and ``tradelog.get_logger``.

Caller side (microseconds, never raises):

* :mod:`~tradelog.logs.loggers` - the structlog bound logger class (reconfigurable level
  filter) and the console output it wraps;
* :mod:`~tradelog.logs.processors` - the last processor: snapshot the event, call exception
  observers, append to the writer's queue (or write it on the spot when the queue is full);
* :mod:`~tradelog.logs.stdlib` - the handler that brings ``logging`` records into the same
  pipeline.

Writer side (background threads, see :mod:`~tradelog.logs.writer`):

* :mod:`~tradelog.logs.rows` - redaction (:mod:`~tradelog.logs.redact`), sanitising
  (:mod:`~tradelog.logs.sanitize`) and encoding into a ``service_logs`` row and a JSONL line;
* :mod:`~tradelog.logs.file_sink` - per-user files shared safely by processes, rotation;
* :mod:`~tradelog.logs.db_sink` - bulk inserts, bisecting bad rows, spooling and replay;
* :mod:`~tradelog.logs.spool` - the spool and dead-letter files;
* :mod:`~tradelog.logs.stats` - counters, published for ``tradelog status``.

Reading: :mod:`~tradelog.logs.query` (user-scoped queries, paging, following).
"""
