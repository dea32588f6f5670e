"""Asking before a command destroys data, and refusing where nobody can answer.

click's prompt reads its answer from standard input. A script or a job without a terminal
and without ``--yes`` gets no answer there: click then prints a bare ``Aborted!``, which
does not say why nor how to go on. An answer piped in (``echo y | ...``) is still taken.
"""

from __future__ import annotations

import sys

import click

from purpose_agent.cli.output import CommandFailed, is_terminal


def confirm(question: str, *, doing: str, err: bool = False) -> None:
    """Ask ``question``; go on only on a yes.

    Args:
        question: What the command is about to do, as a question.
        doing: What ``--yes`` does without asking, as in "pass --yes to {doing} without
            asking" (``"delete"``, ``"downgrade"``).
        err: Ask on standard error, where standard output carries a document (``--json``).

    Raises:
        click.Abort: The answer was no, or Ctrl-C on a terminal.
        CommandFailed: Standard input is not a terminal and ended before an answer.

    """
    try:
        # abort=False: a "no" comes back as False, so the Abort below comes from the end of
        # the input (or Ctrl-C), which click turns into Abort too.
        agreed = click.confirm(question, err=err)
    except click.Abort:
        if is_terminal(sys.stdin):
            raise
        click.echo(err=err)  # end the prompt's line, which got no answer
        raise CommandFailed(
            "cannot ask for confirmation: standard input is not a terminal (and gave no "
            f"answer); pass --yes to {doing} without asking"
        ) from None
    if not agreed:
        raise click.Abort
