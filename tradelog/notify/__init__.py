"""Notification routing, formatting and delivery."""
