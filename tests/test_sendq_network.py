"""Nobody can get another user cut off: the attacks of issue 13, over TCP.

A victim on an Internet-like link (L{harness.SlowLink}: 1,400-byte MSS, a
16 KiB receive buffer, reading at 400 KB/s), an in-process server on a real
port, and many senders.  The unit tests of the same behaviour are in
C{tests/test_sendq.py}.
"""

import re
import socket

import pytest_twisted
from harness import Client, Harness, SlowLink, wait_until

from chatservice.frontends.lines import LineProtocol

REFUSED = (
    "!!! bob is being sent too many private messages (at most 16 KiB a second "
    "from everyone together); yours was not sent: try again in "
)


def shrink_send_buffer(chat: Harness, nickname: str) -> LineProtocol:
    """Give the server's socket of C{nickname} a send buffer of 16 KiB.

    On loopback the kernel grows it to megabytes, which hides a distant
    reader's backlog in the kernel; returns the server's protocol.
    """
    protocol = chat.server_side(nickname)
    protocol.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024
    )
    return protocol


async def _register(chat: Harness, client: Client, nickname: str) -> Client:
    await wait_until(lambda: len(client.lines) >= 2, f"{nickname}'s greeting")
    client.send(nickname)
    await wait_until(
        lambda: (
            any(line.startswith("*** resume token") for line in client.lines)
            or len(client.lines) >= 4
        ),
        f"{nickname}'s welcome",
    )
    return client


@pytest_twisted.ensureDeferred
async def test_private_message_flood_does_not_cut_off_a_slow_reader(
    chat: Harness,
) -> None:
    """25 senders x 10 /msg of 6 KiB at a slow reader: refused past its allowance.

    The issue's attack: invalid bytes tripled each line to about 6 KiB
    after the line-length check, and 1.5 MiB reset the victim within 0.1 s.
    Here the lines are 6 KiB of valid text (a --max-line that allows them),
    so the test holds whatever the input path does with invalid bytes.
    """
    chat.start(max_line=6200, flood_burst=20)
    bob = chat.connect_slow(SlowLink(rate=400_000))
    await _register(chat, bob, "bob")
    senders = [await chat.user(f"s{n:02}") for n in range(25)]
    for sender in senders:
        sender.lines.clear()
    for m in range(10):
        for n, sender in enumerate(senders):
            sender.send(f"/msg bob s{n:02}m{m} " + "x" * 6000)

    def answers(sender: Client) -> list[str]:
        return [line for line in sender.lines if line.startswith(("->", "!!!"))]

    await wait_until(
        lambda: all(len(answers(s)) == 10 for s in senders), "every sender's answers"
    )
    echoed = {
        line.removeprefix("-> *bob* ")
        for sender in senders
        for line in answers(sender)
        if line.startswith("-> *bob* ")
    }
    refused = [
        line for sender in senders for line in answers(sender) if line.startswith("!!!")
    ]
    assert len(echoed) + len(refused) == 250
    assert all(line.startswith(REFUSED) for line in refused), refused[:1]
    assert 9 <= len(echoed) <= 40  # 64 KiB at once, then 16 KiB a second

    def received() -> set[str]:
        return {
            re.sub(r"^\*s\d\d\* ", "", line)
            for line in bob.lines
            if re.match(r"\*s\d\d\* ", line)
        }

    await wait_until(lambda: received() >= echoed, "bob's private messages")
    assert received() == echoed  # nothing he was sent is lost
    bob.send("/ping still here")
    await wait_until(lambda: "*** PONG still here" in bob.lines, "bob's pong")
    assert not bob.disconnected


@pytest_twisted.ensureDeferred
async def test_private_messages_of_a_reader_too_far_behind_are_kept(
    chat: Harness,
) -> None:
    """A reader cut off for a full send queue finds its private messages on /resume.

    Bob stops reading while a room floods him past --max-sendq; carol's
    private messages to him, sent before, during and after, each reach him:
    over the old connection, which he reads to its end, or among the missed
    lines of his /resume.
    """
    chat.start(max_sendq=64 * 1024, flood_burst=1000, resume_grace=60)
    bob = chat.connect_slow(SlowLink(rate=400_000))
    await _register(chat, bob, "bob")
    token = next(
        re.match(r"\*\*\* resume token: (\S+)", line).group(1)  # type: ignore[union-attr]
        for line in bob.lines
        if line.startswith("*** resume token")
    )
    alice, carol = await chat.user("alice"), await chat.user("carol")
    bob_side = shrink_send_buffer(chat, "bob")
    bob.stop()
    sent: list[str] = []

    async def private(text: str) -> None:
        carol.send(f"/msg bob {text}")
        await wait_until(lambda: f"-> *bob* {text}" in carol.lines, f"echo of {text}")
        sent.append(text)

    async def flood(count: int, tag: str) -> None:
        for n in range(count):
            alice.send(f"{tag} {n} " + "m" * 1400)
        alice.send(f"/ping {tag}")
        await wait_until(lambda: f"*** PONG {tag}" in alice.lines, f"pong {tag}")

    await private("early")
    for round in range(40):
        if bob_side._held:  # the server holds output for him now
            break
        await flood(5, f"a{round}")
    assert bob_side._held, "bob's output was never held"
    await private("middle")
    for round in range(40):
        if bob_side.session.closing:
            break
        await flood(20, f"b{round}")
    assert bob_side.session.closing, "bob's send queue never overflowed"
    await private("late")
    bob.go()  # reads what the old connection still has, to its end
    await wait_until(lambda: bob.disconnected, "the old connection's close")
    again = await chat.greeted()
    again.send(f"/resume bob {token}")
    await wait_until(
        lambda: "*** End of missed lines." in again.lines, "the missed lines"
    )
    assert again.lines[2].startswith("*** Resumed as bob in #lobby;")
    seen = bob.lines + again.lines
    for text in sent:
        assert f"*carol* {text}" in seen, text


@pytest_twisted.ensureDeferred
async def test_asking_for_long_answers_does_not_cut_off_a_slow_reader(
    chat: Harness,
) -> None:
    """A slow reader asking for 186 KB of /who at once gets it all, connected.

    The issue's attack was one /who answer bigger than --max-sendq (210 users
    with 6 KiB away messages).  Away messages are now at most 300
    characters and /who is paged; here a --max-sendq of 32 KiB stands for
    the limit, and twenty pages of 9 KB asked at once exceed it fivefold:
    answers are held for the asker uncounted, and it is read on only as
    fast as it reads.
    """
    chat.start(max_sendq=32 * 1024, flood_burst=100)
    asker = chat.connect_slow(SlowLink(rate=400_000))
    await _register(chat, asker, "asker")
    people = [await chat.user(f"u{n:02}") for n in range(40)]
    for person in people:
        person.send("/away " + "z" * 300)
        person.send("/ping away")
    for person in people:
        await wait_until(lambda p=person: "*** PONG away" in p.lines, "away set")
    shrink_send_buffer(chat, "asker")
    asker.lines.clear()
    for n in range(20):
        asker.send("/who #lobby 1")
        asker.send(f"/ping {n}")
    await wait_until(lambda: "*** PONG 19" in asker.lines, "every answer", timeout=20)
    pages = [line for line in asker.lines if line.startswith("*** In #lobby (41): ")]
    assert len(pages) == 20
    assert sum(map(len, pages)) > 5 * 32 * 1024
    asker.send("/ping still here")
    await wait_until(lambda: "*** PONG still here" in asker.lines, "the last pong")
    assert not asker.disconnected
