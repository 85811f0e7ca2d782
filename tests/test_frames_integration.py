"""Frame clients and line clients on real sockets, one in-process server.

The server runs in the test's reactor (pytest-twisted); the clients are
Twisted clients (L{harness.FrameClient}, L{harness.Client}).  Every wait
has a deadline; nothing sleeps.
"""

import random

import pytest
import pytest_twisted
from harness import FrameClient, Harness, wait_until
from test_plugins import use_examples

from chatservice.frontends.frameformat import TEXT_REFUSAL, FrameType

FRAMES = ("tcp:0:interface=127.0.0.1",)


@pytest_twisted.ensureDeferred
async def test_frames_and_lines_chat(chat: Harness) -> None:
    """A frame user and a line user share a room: chat, multi-line chat, commands."""
    chat.start(frames=FRAMES)
    alice = await chat.user("alice")
    bob = await chat.frame_user("bob")
    hello_type, hello = bob.frames[0]
    assert hello_type == FrameType.HELLO
    assert hello["versions"] == [1]
    await wait_until(lambda: "*** bob has joined #lobby" in alice.lines, "bob's join")

    mark = len(bob.frames)
    bob.say("one line\nand another")
    alice.send("hi bob")
    await wait_until(lambda: "<bob> and another" in alice.lines, "bob's lines")
    await wait_until(lambda: bob.events(mark), "alice's line")
    assert alice.lines[-2:] == ["<bob> one line", "<bob> and another"]
    (event,) = bob.events(mark)
    assert {k: v for k, v in event.items() if k != "time"} == {
        "type": "chat",
        "room": "#lobby",
        "nick": "alice",
        "text": "hi bob",
    }

    mark = len(bob.frames)
    bob.say("/who")
    bob.say("/msg alice psst")
    bob.say("/join #nosuch!")
    await wait_until(lambda: len(bob.texts(mark)) >= 3, "the answers")
    assert bob.texts(mark) == [
        "notice: In #lobby (2): alice, bob",
        "private_sent: psst",
        "!invalid_name: invalid room name '#nosuch!': use # and then 1 to 32 "
        "letters, digits, _ or -",
    ]
    await wait_until(lambda: alice.lines[-1] == "*bob* psst", "the private message")


@pytest_twisted.ensureDeferred
async def test_plugin_command(chat: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's command (the example dice) answers a frame user as a line user."""
    use_examples(monkeypatch)
    from chatservice.plugins import dice  # type: ignore[attr-defined]

    monkeypatch.setattr(dice, "rng", random.Random(3))
    chat.start(frames=FRAMES)
    alice = await chat.user("alice")
    bob = await chat.frame_user("bob")
    await wait_until(lambda: "*** bob has joined #lobby" in alice.lines, "bob's join")
    mark = len(bob.frames)
    bob.say("/roll 1d20")
    await wait_until(lambda: bob.texts(mark), "the roll")
    expected = random.Random(3).randint(1, 20)
    line = f"bob rolls 1d20: {expected}"
    assert bob.texts(mark) == [f"notice: {line}"]
    await wait_until(lambda: alice.lines[-1] == f"*** {line}", "alice's view")


@pytest_twisted.ensureDeferred
async def test_resume_over_frames(chat: Harness) -> None:
    """A frame client whose connection drops resumes from a new connection."""
    chat.start(frames=FRAMES, resume_grace=30)
    alice = await chat.user("alice")
    bob = await chat.frame_user("bob")
    (token,) = [e["token"] for e in bob.events() if e["type"] == "resume_token"]
    bob.transport.abortConnection()
    await wait_until(lambda: "*** bob lost connection" in alice.lines[-1], "the loss")
    alice.send("are you back?")

    again = FrameClient()
    await chat.connect(again, chat.frame_port)  # type: ignore[arg-type]
    again.say(f"/resume bob {token}")
    await wait_until(
        lambda: any(e["type"] == "chat" for e in again.events()), "missed lines"
    )
    texts = again.texts()
    resumed = texts.index("resumed: ")
    assert texts[resumed + 1] == "chat: are you back?", texts
    await wait_until(lambda: alice.lines[-1] == "*** bob is back", "bob's return")


@pytest_twisted.ensureDeferred
async def test_heartbeat_timeout(chat: Harness) -> None:
    """A frame client that answers no PING is closed, and its leave announced."""
    chat.start(frames=FRAMES, heartbeat=0.2)
    alice = await chat.user("alice")
    bob = await chat.frame_user("bob", FrameClient(answer_pings=False))
    carol = await chat.frame_user("carol")  # answers its PINGs
    await wait_until(lambda: bob.disconnected, "bob's close", timeout=5)
    assert [t for t, _ in bob.frames].count(FrameType.PING) == 1
    assert bob.texts()[-1] == (
        "notice: heartbeat timeout: no answer to a PING within 0.2 seconds; "
        "disconnecting"
    )
    await wait_until(
        lambda: "*** bob has left (heartbeat timeout)" in alice.lines, "the leave"
    )
    await wait_until(
        lambda: [t for t, _ in carol.frames].count(FrameType.PING) >= 3,
        "carol's third PING",
        timeout=5,
    )
    assert not carol.disconnected


@pytest_twisted.ensureDeferred
async def test_telnet_at_the_frame_port(chat: Harness) -> None:
    """Someone typing at the frame port reads one plain line and is closed."""
    chat.start(frames=FRAMES)
    user = FrameClient()
    await chat.connect(user, chat.frame_port)  # type: ignore[arg-type]
    await wait_until(lambda: len(user.frames) >= 2, "the hello and greeting")
    user.transport.write(b"alice\r\n")
    await wait_until(lambda: user.disconnected, "the close")
    assert user.raw.endswith(TEXT_REFUSAL)
