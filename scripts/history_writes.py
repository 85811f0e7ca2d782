"""CPU cost of writing room history to a SQLite file (the store's thread).

Usage::

    python3 scripts/history_writes.py                  # 6,000 rows a batch
    python3 scripts/history_writes.py --rows 600 --batches 40 --before 200000

It opens a store on a new SQLite file in a temporary directory (every
migration, the server's PRAGMAs), writes C{--before} rows first, then
times C{--batches} batches of C{--rows} rows each, written as the server
writes a second's lines (L{chatservice.store.history._insert}, in one
transaction), and prints the thread's CPU time per row: median and
spread of the batches.  Run it with each checkout's own Python to compare
two of them, alternating.
"""

import argparse
import os
import random
import statistics
import tempfile
import time


def main() -> None:
    """Write the rows and print the cost of each batch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--before", type=int, default=60000)
    parser.add_argument("--rooms", type=int, default=20)
    args = parser.parse_args()

    from chatservice.events import Event
    from chatservice.store import Store
    from chatservice.store.base import _in_transaction
    from chatservice.store.history import _insert

    random.seed(19)
    words = [
        "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))
        for n in random.choices(range(2, 10), k=3000)
    ]
    when = [time.time() - 3600.0]

    def lines(count: int) -> list[tuple[str, Event]]:
        made = []
        for n in range(count):
            when[0] += 0.001
            text = " ".join(random.choices(words, k=random.randint(3, 12)))
            event = Event("chat", text, nick=f"user{n % 500}", when=when[0])
            made.append((f"#room{n % args.rooms}", event))
        return made

    with tempfile.TemporaryDirectory() as directory:
        store = Store(f"sqlite:{os.path.join(directory, 'chat.db')}")
        store.open()
        connection = store._keeper
        try:

            def write(batch: list[tuple[str, Event]]) -> float:
                started = time.thread_time()
                _in_transaction(connection.cursor(), "sqlite", _insert, (batch,))
                connection.commit()
                return time.thread_time() - started

            for _ in range(0, args.before, args.rows):
                write(lines(args.rows))
            costs = [
                write(lines(args.rows)) / args.rows * 1e6 for _ in range(args.batches)
            ]
        finally:
            store.close()
    print(
        f"history writes: median {statistics.median(costs):.2f} us a row "
        f"(min {min(costs):.2f}, max {max(costs):.2f}) over {args.batches} "
        f"batches of {args.rows}, after {args.before} rows"
    )


if __name__ == "__main__":
    main()
