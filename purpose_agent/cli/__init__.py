"""The ``purpose-agent`` command line: ``main()`` is the console script's entry point."""

from purpose_agent.cli.app import cli, main

__all__ = ["cli", "main"]
