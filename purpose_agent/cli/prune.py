"""``purpose-agent prune``: drop events a snapshot covers, and runs older than an age."""

from __future__ import annotations

from datetime import timedelta

import click

from purpose_agent.cli.options import Duration, json_option, url_option
from purpose_agent.cli.output import age, console, count, emit_json
from purpose_agent.cli.stores import open_url
from purpose_agent.ops.prune import prune as prune_store
from purpose_agent.ops.prune import require_sql
from purpose_agent.stores.open import describe


@click.command()
@click.option("--covered", is_flag=True, help="Delete events at or below their run's snapshot seq.")
@click.option(
    "--older-than",
    type=Duration(),
    default=None,
    metavar="AGE",
    help="Delete runs not written for longer than AGE (30d, 12h, 90m, 2w...).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@json_option
@url_option
def prune(
    covered: bool, older_than: timedelta | None, dry_run: bool, as_json: bool, url: str | None
) -> None:
    """Remove history a SQL store no longer needs.

    --covered deletes the events recovery never reads again (a run resumes from its snapshot
    and the events after it); --older-than deletes whole runs. Try --dry-run first.
    """
    if not covered and older_than is None:
        raise click.UsageError("say what to prune: --covered, --older-than AGE, or both")
    with open_url(url, create=False) as opened:
        where = describe(opened)
        store = require_sql(opened, where)
        result = prune_store(store, covered=covered, older_than=older_than, dry_run=dry_run)
    if as_json:
        emit_json({"store": where, **result.to_dict()})
        return
    verb = "Would delete" if dry_run else "Deleted"
    out = console()
    if older_than is not None:
        out.print(
            f"{verb} {count(result.old_runs, 'run')} not written for {age(older_than)} "
            f"({count(result.old_run_events, 'event')}) from {where}"
        )
    if covered:
        out.print(
            f"{verb} {count(result.covered_events, 'event')} covered by snapshots "
            f"in {count(result.covered_runs, 'run')} from {where}"
        )
