"""Structured logging: processors, sinks and the helpers they share."""
