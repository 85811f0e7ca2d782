"""Accounts in a cluster: real Redis and a real PostgreSQL store, two nodes."""

from collections.abc import Iterator

import pytest
from clusterharness import Nodes, block, eventually, heard, in_greenlet

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.store import Store
from chatservice.testing import FakeConnection

CHEAP = (2**10, 8, 1)
CHALLENGE = (
    "*** alice is a registered nickname: if it is yours, type /identify "
    "PASSWORD within 30 seconds; otherwise you will be renamed to a guest name"
)


@pytest.fixture
def stores(postgres: str) -> Iterator[list[Store]]:
    """Two stores (one a node) on one new PostgreSQL database; closed after."""
    made = [Store(postgres), Store(postgres)]
    for store in made:
        store.open()
    yield made
    for store in made:
        store.close()


def servers(nodes: Nodes, stores: list[Store]) -> list[ChatFactory]:
    """Two nodes of one cluster, sharing Redis and the PostgreSQL store."""
    made = []
    for store in stores:
        node = nodes.make("accounts")
        factory = ChatFactory(
            Settings(),
            registry=node,
            run_in_thread=run_at_once,
            shared_sessions=node.shared_sessions,
            shared_bans=node.shared_bans,
            shared_accounts=node.shared_accounts,
            store=store,
        )
        factory.accounts.cost = CHEAP
        block(factory.accounts.start())
        nodes.factories.append(factory)
        made.append(factory)
    return made


def user(
    factory: ChatFactory, first_line: str, *then: str
) -> tuple[FakeConnection, list[str]]:
    """A line user of C{factory} who typed C{first_line}, registered."""
    connection = FakeConnection(factory)
    connection.enter(first_line)
    seen: list[str] = []
    heard(connection, "*** Type /help for the commands.", seen)
    connection.enter(*then)
    return connection, seen


@in_greenlet
def test_message_kept_on_one_node_is_delivered_on_another(
    nodes: Nodes, stores: list[Store]
) -> None:
    """Registered on A, left a message on A, alice identifies on B and gets it."""
    on_a, on_b = servers(nodes, stores)
    alice, seen = user(on_a, "alice", "/register wonderland")
    heard(
        alice,
        "*** alice is now registered to you; on later connections prove it with "
        "/identify PASSWORD",
        seen,
    )
    # Node B read the accounts at its start, before this: it hears of it.
    eventually(lambda: on_b.accounts.is_registered("alice"), "B knows alice")
    alice.enter("/quit")
    eventually(lambda: alice.closing, "alice gone")
    alice.drop()
    bob, bob_saw = user(on_a, "bob", "/msg alice kept on node A")
    heard(
        bob,
        "*** alice is offline: your message was kept, and will be delivered when "
        "they identify",
        bob_saw,
    )

    again, again_saw = user(on_b, "alice")
    heard(again, CHALLENGE, again_saw)
    again.enter("/identify wonderland")
    heard(again, "*** You are now identified as alice.", again_saw)
    eventually(
        lambda: (
            any(line.endswith("] *bob* kept on node A") for line in again_saw)
            or again_saw.extend(again.lines())
        ),
        "the message kept on A",
    )
    again.drop()
    bob.drop()


@in_greenlet
def test_dropped_account_is_dropped_on_every_node(
    nodes: Nodes, stores: list[Store]
) -> None:
    """/unregister on one node: the other no longer challenges the nickname."""
    on_a, on_b = servers(nodes, stores)
    alice, seen = user(on_a, "alice", "/register wonderland")
    eventually(lambda: on_b.accounts.is_registered("alice"), "B knows alice")
    alice.enter("/unregister wonderland")
    heard(alice, "*** alice is no longer registered; its account is deleted.", seen)
    eventually(lambda: not on_b.accounts.is_registered("alice"), "B forgot alice")
    alice.drop()
