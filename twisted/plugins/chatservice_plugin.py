"""Makes C{twistd chat} available; imports nothing until it is used."""

from twisted.application.service import ServiceMaker

chat = ServiceMaker(
    "chatservice",
    "chatservice.tap",
    "A chat server for telnet and netcat users.",
    "chat",
)
