"""Every command's help renders as plain text."""

from __future__ import annotations

import argparse

from tradelog._cli import build_parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_parsers(child))
    return found


def test_help_has_no_rst_markup() -> None:
    """Descriptions taken from docstrings lose their ``literal`` markup in --help."""
    parsers = _parsers(build_parser())
    assert len(parsers) > 20
    for parser in parsers:
        text = parser.format_help()
        assert "``" not in text, parser.prog
        assert parser.prog.startswith("tradelog")
