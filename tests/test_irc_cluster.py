"""The IRC front end in a cluster: IRC users on two nodes see each other.

Two nodes of one cluster in this process, over a real redis-server (the
C{redis_server} fixture), each serving IRC users on StringTransports.
"""

from clusterharness import Nodes, heard, in_greenlet

from chatservice.frontends.irc import irc_front_end
from chatservice.testing import FakeConnection


@in_greenlet
def test_irc_users_on_two_nodes(nodes: Nodes) -> None:
    """Nicknames, channels, chat, private lines, NICK and QUIT cross nodes."""
    on_a, on_b = nodes.servers("irc")
    alice = FakeConnection(on_a, front_end=irc_front_end)
    bob = FakeConnection(on_b, front_end=irc_front_end)
    seen_a: list[str] = []
    seen_b: list[str] = []
    try:
        alice.enter("NICK alice", "USER a 0 * :A")
        heard(alice, ":chatservice 366 alice #lobby :End of /NAMES list.", seen_a)
        bob.enter("NICK ALICE", "USER b 0 * :B")
        heard(bob, ":chatservice 433 * ALICE :Nickname is already in use", seen_b)
        bob.enter("NICK bob")
        heard(bob, ":chatservice 366 bob #lobby :End of /NAMES list.", seen_b)
        assert ":chatservice 353 bob = #lobby :alice bob" in seen_b
        heard(alice, ":bob!bob@chatservice JOIN #lobby", seen_a)
        alice.enter("JOIN #tea")
        heard(alice, ":chatservice 366 alice #tea :End of /NAMES list.", seen_a)
        bob.enter("JOIN #tea")
        heard(bob, ":chatservice 353 bob = #tea :alice bob", seen_b)
        heard(alice, ":bob!bob@chatservice JOIN #tea", seen_a)
        alice.enter("PRIVMSG #tea :hello from a", "PRIVMSG bob :psst")
        heard(bob, ":alice!alice@chatservice PRIVMSG #tea :hello from a", seen_b)
        heard(bob, ":alice!alice@chatservice PRIVMSG bob :psst", seen_b)
        bob.enter("PRIVMSG #tea :\x01ACTION waves\x01", "NICK robert")
        heard(alice, ":bob!bob@chatservice PRIVMSG #tea :\x01ACTION waves\x01", seen_a)
        heard(alice, ":bob!bob@chatservice NICK robert", seen_a)
        bob.enter("QUIT :bye")
        heard(alice, ":robert!robert@chatservice QUIT :quit: bye", seen_a)
    finally:
        alice.drop()
        bob.drop()
