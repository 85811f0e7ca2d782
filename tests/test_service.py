"""The service binds its endpoints with readable errors, and stops cleanly."""

import gc

import pytest
import pytest_twisted

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import LogLevel

from chatservice.config import Settings
from chatservice.errors import StartupError
from chatservice.factory import ChatFactory
from chatservice.logs import gate
from chatservice.service import ChatService


def make_service(*descriptions: str) -> ChatService:
    factory = ChatFactory(Settings())
    return ChatService(
        factory, [(d, serverFromString(reactor, d)) for d in descriptions]
    )


@pytest_twisted.ensureDeferred
async def test_port_in_use(busy_port: int) -> None:
    """A busy port is one line naming the endpoint; earlier listeners close."""
    busy = f"tcp:{busy_port}:interface=127.0.0.1"
    service = make_service("tcp:0:interface=127.0.0.1", busy)
    with pytest.raises(StartupError) as caught:
        service.privilegedStartService()
    assert str(caught.value) == (
        f"chatservice: cannot listen on {busy}: address already in use"
    )
    assert service.ports == []
    await _settle()


# Twisted's Port.startListening does not close its socket when bind() raises
# OverflowError (it only cleans up after socket.error); the process exits
# right after, so only the test sees the leaked socket.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest_twisted.ensureDeferred
async def test_port_out_of_range() -> None:
    """A port number beyond 65535 is one readable line."""
    service = make_service("tcp:99999")
    with pytest.raises(StartupError) as caught:
        service.privilegedStartService()
    assert str(caught.value) == (
        "chatservice: cannot listen on tcp:99999: "
        "the port number is out of range (0-65535)"
    )
    del caught  # its traceback holds the frame that holds the socket
    gc.collect()  # collect the leaked socket here, under this test's filter
    await _settle()


@pytest_twisted.ensureDeferred
async def test_start_and_stop() -> None:
    """Several listeners share one factory; stopping closes them all."""
    service = make_service("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1")
    service.privilegedStartService()
    service.startService()
    assert len(service.ports) == 2
    assert {port.factory for port in service.ports} == {service.factory}  # type: ignore[attr-defined]
    await service.stopService()
    assert service.ports == []


@pytest_twisted.ensureDeferred
async def test_log_level_applies_while_running() -> None:
    """--log-level holds from the start to the stop, then the old one is back."""
    service = ChatService(
        ChatFactory(Settings(log_level="error")),
        [
            (
                "tcp:0:interface=127.0.0.1",
                serverFromString(reactor, "tcp:0:interface=127.0.0.1"),
            )
        ],
    )
    before = gate.level
    service.privilegedStartService()
    assert gate.level == LogLevel.error
    service.startService()
    assert gate.level == LogLevel.error
    await service.stopService()
    assert gate.level == before


async def _settle() -> None:
    """Let the reactor run the port-closing calls that stopListening queued."""
    from twisted.internet import task

    await task.deferLater(reactor, 0.01, lambda: None)
