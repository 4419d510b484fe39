"""The replay corpus at full size: a month of 1,000 customers' Stripe events delivered in
order, then shuffled, every event three times and a share of them a day or two late; the
billing snapshots, message logs, conversions and lifecycle instances must be equal.

    make replay-corpus              # or: .venv/bin/python -m bench.replay_corpus --customers 1000

Starts its own Temporal dev server; each delivery runs the real API, forwarder and worker
in this process, in a namespace, SQLite database and local Postmark server of its own
(`tests/replay_rig.py`). Prints the corpus's counts, each delivery's counts and time, and
the comparison; exits 1 if the deliveries differ.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stripe_lifecycle.storage.migrate import upgrade
from stripe_lifecycle.temporal_setup import start_dev_server, stop_process, wait_for_server
from tests import replay_corpus
from tests.conftest import free_port
from tests.replay_rig import Outcome, differences, running_delivery


async def deliver(
    address: str, workdir: Path, name: str, plan: list[list[list[dict[str, object]]]]
) -> Outcome:
    url = f"sqlite+aiosqlite:///{workdir / f'{name}.db'}"
    await upgrade(url)
    namespace = f"replay-{name.replace(' ', '-')}-{uuid.uuid4().hex[:8]}"
    total = sum(len(chain) for slot in plan for chain in slot)
    columns = (
        TextColumn(f"{name:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(name, total=total)
        async with running_delivery(address, namespace, url, f"tq-{namespace}") as delivery:
            return await delivery.run(plan, advance=lambda n: progress.advance(task, n))


async def main(args: argparse.Namespace) -> int:
    console = Console()
    # The workflows' own warnings (a lifecycle already ended when told something) would
    # scroll the progress bars away; failures still show.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    corpus = replay_corpus.month(args.customers, args.seed)
    counts = corpus.counts()
    slots, delayed = replay_corpus.disordered(corpus, args.seed)
    console.print(
        f"corpus: {args.customers:,} customers, {len(corpus.events):,} events "
        f"(seed {args.seed}); disordered: {sum(map(len, slots)):,} deliveries, "
        f"{delayed:,} events a day or two late"
    )
    console.print("stories: " + ", ".join(f"{k} {v}" for k, v in counts["stories"].most_common()))
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in counts["versions"].most_common()))
    console.print("events: " + ", ".join(f"{k} {v}" for k, v in counts["types"].most_common()))

    workdir = Path(tempfile.mkdtemp(prefix="lifecycle-replay-"))
    port = free_port()
    server = start_dev_server(workdir, port, free_port(), "default", workdir / "temporal.log")
    address = f"127.0.0.1:{port}"
    try:
        await wait_for_server(address, "default", server)
        in_order = await deliver(address, workdir, "in order", replay_corpus.in_order(corpus))
        disordered = await deliver(
            address, workdir, "disordered", [[[event] for event in slot] for slot in slots]
        )
    finally:
        stop_process(server)

    table = Table("", "in order", "disordered")
    for (label, a), b in zip(in_order.counts().items(), disordered.counts().values(), strict=True):
        table.add_row(label, f"{a:,}", f"{b:,}")
    table.add_row("deliveries", f"{in_order.deliveries:,}", f"{disordered.deliveries:,}")
    table.add_row("seconds", f"{in_order.seconds:.0f}", f"{disordered.seconds:.0f}")
    console.print(table)
    found = differences(in_order, disordered, limit=args.show)
    if found:
        console.print(f"[red]the deliveries differ[/red] ({len(found)} shown):")
        for line in found:
            console.print(f"  {line}", markup=False)
        return 1
    console.print(
        "[green]equal[/green]: snapshots, message logs, conversions and lifecycle instances"
    )
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--show", type=int, default=30, help="differences to print at most")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
