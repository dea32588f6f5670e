"""Asking before a command destroys data, and refusing where nobody can answer.

click's prompt reads its answer from standard input. A script or a job without a terminal
and without ``--yes`` gets no answer there: click then prints a bare ``Aborted!``, which
does not say why nor how to go on. An answer piped in (``echo y | ...``) is still taken.

A "no", or the end of the input (Ctrl-D), leaves click's ``Aborted!`` and status 1: the
command was declined. Ctrl-C at the question is an interrupt, as anywhere else in the
command: one line, that nothing was changed, and status 130 (143 for ``SIGTERM``).
"""

from __future__ import annotations

import sys

import click

from purpose_agent.cli.app import on_interrupt
from purpose_agent.cli.output import CommandFailed, is_terminal


def confirm(question: str, *, doing: str, err: bool = False) -> None:
    """Ask ``question``; go on only on a yes.

    Args:
        question: What the command is about to do, as a question.
        doing: What ``--yes`` does without asking, as in "pass --yes to {doing} without
            asking" (``"delete"``, ``"downgrade"``).
        err: Ask on standard error, where standard output carries a document (``--json``).

    Raises:
        click.Abort: The answer was no, or the terminal's input ended (Ctrl-D).
        CommandFailed: Standard input is not a terminal and ended before an answer.
        KeyboardInterrupt: Ctrl-C (or ``SIGTERM``) at the question, raised again for the
            command group to report as every other interrupt.

    """
    try:
        # abort=False: a "no" comes back as False, so the Abort below comes from the end of
        # the input or from Ctrl-C, both of which click turns into Abort.
        agreed = click.confirm(question, err=err)
    except click.Abort as exc:
        # click turns Ctrl-C into Abort too, which printed "Aborted!" with status 1; the
        # interrupt is still the exception's context.
        interrupt = exc.__context__
        if isinstance(interrupt, KeyboardInterrupt):
            on_interrupt("stopped at the question; nothing was changed")
            raise interrupt from None
        if is_terminal(sys.stdin):
            raise
        click.echo(err=err)  # end the prompt's line, which got no answer
        raise CommandFailed(
            "cannot ask for confirmation: standard input is not a terminal (and gave no "
            f"answer); pass --yes to {doing} without asking"
        ) from None
    if not agreed:
        raise click.Abort
