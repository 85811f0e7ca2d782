"""Every implementation of a seam provides its interface in full.

The server reads what an interface declares without probing, so each
implementation must have all of it; the registries' behaviour is checked
further by L{chatservice.testing.RegistryBehaviour}.
"""

from collections.abc import Callable

import pytest

from twisted.internet.task import Clock
from zope.interface import Interface
from zope.interface.verify import verifyObject

from chatservice.cluster.bans import ClusterBans
from chatservice.cluster.node import Node
from chatservice.cluster.sessions import ClusterSessions, _Collector
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.interfaces import (
    IChatClient,
    IChatServer,
    IChatSession,
    ICommand,
    IHeldClient,
    IRegistry,
    ISharedBans,
    ISharedSessions,
)
from chatservice.registry import Registry
from chatservice.resume import HeldClient
from chatservice.shared import LocalBans, LocalSessions
from chatservice.testing import FakeClient, register


def _session() -> IChatSession:
    factory = ChatFactory(Settings(), clock=Clock())
    return register(factory, "alice").session


def _held() -> HeldClient:
    session = _session()
    return HeldClient(session, session.server.sessions, 10, 1000)


def _node() -> Node:
    return Node("test", "n1", Clock(), 10, None, 1024)


@pytest.mark.parametrize(
    ("interface", "make"),
    [
        (IRegistry, lambda: Registry(clock=Clock())),
        (ISharedSessions, LocalSessions),
        (ISharedBans, LocalBans),
        (ISharedSessions, lambda: ClusterSessions(_node())),
        (ISharedBans, lambda: ClusterBans(_node())),
        (IChatServer, lambda: ChatFactory(Settings(), clock=Clock())),
        (IChatSession, _session),
        (IChatClient, _session),
        (IHeldClient, _held),
        (IChatClient, FakeClient),
        (IChatClient, lambda: _Collector(FakeClient(), 1024)),
        (ICommand, lambda: ChatFactory(Settings(), clock=Clock()).commands["who"]),
    ],
)
def test_provides_in_full(
    interface: type[Interface], make: Callable[[], object]
) -> None:
    """The implementation has every attribute and method of its interface."""
    assert verifyObject(interface, make())
