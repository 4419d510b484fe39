"""`lifecycle segments list | members NAME [--csv] | explain NAME CUSTOMER_ID`: the segments
read straight from the database (`LIFECYCLE_DATABASE_URL`) and the segments file
(`LIFECYCLE_SEGMENTS`); no Temporal needed."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from stripe_lifecycle.domain.segments import (
    Segment,
    SegmentsConfig,
    evaluate,
    explain,
    load_segments,
)
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import SessionMaker, create_engine, create_sessionmaker
from stripe_lifecycle.storage.models import Customer, SegmentMember
from stripe_lifecycle.storage.segments import (
    all_members,
    customer_usage,
    member_counts,
    members_csv,
    segment_facts,
)


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[SessionMaker]:
    engine = create_engine(settings.database_url)
    try:
        yield create_sessionmaker(engine)
    except (DBAPIError, OSError) as exc:
        reason = exc.orig if isinstance(exc, DBAPIError) else exc
        raise SystemExit(
            f"cannot read the database at LIFECYCLE_DATABASE_URL: {reason} "
            "(is it up, and migrated with `lifecycle migrate`?)"
        ) from exc
    finally:
        await engine.dispose()


def _console() -> Console:
    # Plain text when piped: no colours or markup read into the explain lines.
    return Console(highlight=False)


def _segment(config: SegmentsConfig, name: str, settings: Settings) -> Segment:
    for segment in config.segments:
        if segment.name == name:
            return segment
    known = ", ".join(s.name for s in config.segments) or "none"
    raise SystemExit(f"no segment {name!r} in {settings.segments} (segments: {known})")


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def cmd_segments_list(_args: argparse.Namespace, settings: Settings) -> None:
    config = load_segments(settings.segments)
    async with _database(settings) as sessionmaker, sessionmaker() as session:
        counts = await member_counts(session)
    table = Table(title=f"Segments ({settings.segments})")
    table.add_column("Segment", no_wrap=True)
    table.add_column("Members", justify="right")
    table.add_column("Time-based")
    table.add_column("Description")
    for segment in config.segments:
        table.add_row(
            segment.name,
            str(counts.get(segment.name, 0)),
            "yes" if segment.time_based else "no",
            segment.description,
        )
    _console().print(table)


async def cmd_segments_members(args: argparse.Namespace, settings: Settings) -> None:
    _segment(load_segments(settings.segments), args.name, settings)
    async with _database(settings) as sessionmaker:
        if args.csv:
            header = True
            async for batch in all_members(sessionmaker, args.name):
                sys.stdout.write(members_csv(batch, header))
                header = False
            if header:
                sys.stdout.write(members_csv([], True))
            return
        table = Table(title=f"Members of {args.name}")
        for column in ("Customer", "Email", "Plan", "Status", "MRR", "Entered"):
            table.add_column(column, justify="right" if column == "MRR" else "left")
        count = 0
        async for batch in all_members(sessionmaker, args.name):
            for m in batch:
                mrr = "" if m.mrr_cents is None else f"{m.mrr_cents} {m.currency or ''}".strip()
                table.add_row(
                    m.customer_id,
                    m.email or "",
                    m.plan or "",
                    m.status or "",
                    mrr,
                    _when(m.entered_at),
                )
                count += 1
    console = _console()
    console.print(table)
    console.print(f"{count} member{'' if count == 1 else 's'}")


async def cmd_segments_explain(args: argparse.Namespace, settings: Settings) -> None:
    config = load_segments(settings.segments)
    segment = _segment(config, args.name, settings)
    async with _database(settings) as sessionmaker, sessionmaker() as session:
        stored = await segment_facts(session, args.customer_id)
        if stored is None:
            if await session.get(Customer, args.customer_id) is None:
                raise SystemExit(f"no customer {args.customer_id!r}")
            raise SystemExit(
                f"{args.customer_id} has not been evaluated yet: no stored facts to explain"
            )
        usage = await customer_usage(session, args.customer_id)
        member = await session.get(SegmentMember, (args.name, args.customer_id))
    facts: dict[str, Any] = {**stored.facts, "usage": usage}
    now = int(time.time())
    lines = explain(segment, facts, now, config.seats)
    verdict = evaluate(segment, facts, now, config.seats)
    console = _console()
    console.print(f"Segment {segment.name}: {segment.description}", markup=False)
    console.print(
        f"Customer {args.customer_id}: billing facts of {_when(stored.evaluated_at)}, "
        "usage as reported now",
        markup=False,
    )
    for line in lines:
        console.print(line, markup=False)
    at = _when(datetime.fromtimestamp(now, UTC))
    console.print(
        f"{'IN' if verdict else 'NOT IN'} {segment.name} (evaluated at {at})", markup=False
    )
    console.print(
        f"stored membership: in since {_when(member.entered_at)}"
        if member is not None
        else "stored membership: not a member",
        markup=False,
    )


SegmentCommand = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, None]]

SEGMENT_COMMANDS: dict[str, tuple[SegmentCommand, str]] = {
    "list": (cmd_segments_list, "the segments in force and how many customers each has now"),
    "members": (cmd_segments_members, "the customers in a segment now (--csv for CSV)"),
    "explain": (
        cmd_segments_explain,
        "why a customer is in a segment or not: each condition against the stored facts",
    ),
}


def add_segment_commands(sub: Any) -> None:
    """`lifecycle segments ...` on the command's subparsers."""
    segments = sub.add_parser("segments", help="list segments, their members, explain one")
    actions = segments.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help=SEGMENT_COMMANDS["list"][1])
    members = actions.add_parser("members", help=SEGMENT_COMMANDS["members"][1])
    members.add_argument("name", help="a segment's name")
    members.add_argument("--csv", action="store_true", help="every member as CSV on stdout")
    explained = actions.add_parser("explain", help=SEGMENT_COMMANDS["explain"][1])
    explained.add_argument("name", help="a segment's name")
    explained.add_argument("customer_id", help="a Stripe customer id (cus_...)")
