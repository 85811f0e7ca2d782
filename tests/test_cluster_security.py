"""A cluster under attack or in a race: each test reproduces one of issue 13's findings.

Every test runs against a real redis-server, on the real reactor, with
several nodes of one cluster in this process (see C{clusterharness}).
"""

from clusterharness import Nodes, block, eventually, heard, in_greenlet
from prometheus_client import generate_latest

from chatservice.metrics import collector_registry
from chatservice.testing import FakeConnection


@in_greenlet
def test_nickname_conflict_close_reason_is_a_fixed_label(nodes: Nodes) -> None:
    """A nickname lost to another node is counted without the nickname."""
    on_a, on_b = nodes.servers("conflict")
    a = on_a.registry
    block(a.idle())
    a.link._down()  # cut off: alice registers on node A alone
    here = FakeConnection(on_a)
    here.enter("alice")
    eventually(lambda: here.protocol.nickname == "alice", "alice on node A")
    there = FakeConnection(on_b)
    there.enter("alice")  # node B gives the nickname away meanwhile
    eventually(lambda: there.protocol.nickname == "alice", "alice on node B")
    a.link._check()
    heard(
        here,
        "*** disconnected: nickname taken elsewhere: another server gave alice to "
        "someone else while the servers were cut off; reconnect and choose a "
        "nickname",
        [],
    )
    assert here.closing
    here.drop()
    assert dict(on_a.stats.closed) == {"nickname taken elsewhere": 1}
    text = generate_latest(collector_registry(on_a)).decode("utf-8")
    assert 'chatservice_disconnects_total{reason="nickname taken elsewhere"} 1.0' in (
        text
    )
    assert "alice" not in text
    there.drop()
