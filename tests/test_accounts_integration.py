"""Accounts across front ends on real ports: telnet and frame clients."""

import pytest_twisted
from harness import FrameClient, Harness, wait_until

REGISTERED = (
    "*** alice is now registered to you; on later connections prove it with "
    "/identify PASSWORD"
)


async def registered_alice(chat: Harness) -> None:
    """Register alice (password wonderland) from telnet, then let her go."""
    alice = await chat.user("alice")
    alice.send("/register wonderland")
    await wait_until(lambda: alice.lines[-1] == REGISTERED, "registered")
    alice.send("/quit")
    await wait_until(lambda: alice.disconnected, "alice's quit")


@pytest_twisted.ensureDeferred
async def test_registered_on_telnet_identified_on_frames(chat: Harness) -> None:
    """A frame client proves a nickname registered from telnet, and gets its mail."""
    chat.start(frames=["tcp:0:interface=127.0.0.1"])
    await registered_alice(chat)
    bob = await chat.user("bob")
    bob.send("/msg alice left for you")
    await wait_until(lambda: "was kept" in bob.lines[-1], "kept")
    alice = FrameClient()
    await chat.connect(alice, chat.frame_port)  # type: ignore[arg-type]
    alice.say("/nick alice wonderland")
    await wait_until(
        lambda: any(e.get("type") == "private" for e in alice.events()), "the mail"
    )
    (mail,) = [e for e in alice.events() if e.get("type") == "private"]
    assert (mail["nick"], mail["text"], mail["history"]) == (
        "bob",
        "left for you",
        True,
    )
    assert "notice: You are now identified as alice." in alice.texts()
    assert not any("registered nickname" in text for text in alice.texts())


@pytest_twisted.ensureDeferred
async def test_frame_squatter_renamed_after_the_grace(chat: Harness) -> None:
    """A frame client taking a registered nickname is renamed when the grace ends."""
    chat.start(frames=["tcp:0:interface=127.0.0.1"], identify_grace=0.5)
    await registered_alice(chat)
    watcher = await chat.user("carol")
    squatter = await chat.frame_user("alice")
    await wait_until(
        lambda: any(e.get("type") == "nick" for e in squatter.events()),
        "the guest rename",
    )
    (renamed,) = [e for e in squatter.events() if e.get("type") == "nick"]
    guest = renamed["new_nick"]
    assert renamed["nick"] == "alice" and guest.startswith("Guest")
    await wait_until(
        lambda: (
            f"notice: alice is a registered nickname and you did not identify "
            f"within 0.5 seconds: you are now {guest}" in squatter.texts()
        ),
        "the reason",
    )
    await wait_until(
        lambda: f"*** alice is now known as {guest}" in watcher.lines, "watcher told"
    )
