"""Plugins: commands and message filters found by Twisted's plugin system."""

import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

import chatservice.plugins
from chatservice import __version__
from chatservice.config import Settings
from chatservice.extensions import describe, load_extensions
from chatservice.factory import ChatFactory
from chatservice.interfaces import ICommand, IMessageFilter
from chatservice.testing import FakeConnection, register

GREETING = [
    "*** Welcome to chatservice.",
    "*** Choose a nickname: type it and press Enter (or use /nick NAME).",
]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BUILTIN = {"away", "help", "join", "me", "msg", "nick", "ping", "quit"}
BUILTIN |= {"rooms", "topic", "users", "who"}

#: The C{install} fixture (conftest.py): writes a plugin module, returns its name.
Install = Callable[[str], str]


def use_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the plugin scan see the example distributions, as if installed."""
    extra = [
        str(EXAMPLES / name / "chatservice" / "plugins")
        for name in ["chatservice-dice", "chatservice-capsfilter"]
    ]
    monkeypatch.setattr(
        chatservice.plugins, "__path__", [*chatservice.plugins.__path__, *extra]
    )


COMMAND = """
    from twisted.internet import defer
    from chatservice import events
    from chatservice.commands import command

    @command("/{name} [TEXT]", "a test command")
    def {name}(session, args):
        {body}
"""


def command_plugin(install: Install, name: str, body: str) -> str:
    return install(COMMAND.format(name=name, body=body))


def test_builtins_are_plugins() -> None:
    """The built-in commands are found through the plugin system."""
    extensions = load_extensions()
    assert BUILTIN <= set(extensions.commands)
    assert extensions.problems == ()


def test_every_command_provides_icommand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command found, built-in or an example's, has all of ICommand."""
    use_examples(monkeypatch)
    extensions = load_extensions()
    assert "roll" in extensions.commands
    for found in extensions.commands.values():
        assert verifyObject(ICommand, found)
    for found in extensions.filters:
        assert verifyObject(IMessageFilter, found)


def test_incomplete_command_left_out(install: Install) -> None:
    """A command without operator_only is left out, and the log says why."""
    module = install(
        """
        from twisted.plugin import IPlugin
        from zope.interface import implementer
        from chatservice.interfaces import ICommand

        @implementer(IPlugin, ICommand)
        class Half:
            name, usage, help = "half", "/half", "lacks operator_only"
            before_registration, min_args = False, 0

            def __call__(self, session, args):
                return None

        half = Half()
        """
    )
    extensions = load_extensions()
    assert "half" not in extensions.commands
    assert extensions.problems == (
        f"plugin command /half from {module} left out: "
        "ICommand needs operator_only, which it lacks",
    )


def test_third_party_command(install: Install, clock: Clock) -> None:
    """A command in a third party's plugin module is used, and in /help."""
    command_plugin(install, "echo", "session.deliver(events.notice('echo ' + args))")
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.enter("/ECHO hi there", "/help echo")
    assert alice.lines() == [
        "*** echo hi there",
        "*** usage: /echo [TEXT]",
        "*** a test command",
    ]
    alice.enter("/help")
    assert any(line.startswith("*** /echo [TEXT] ") for line in alice.lines())


def test_import_error_reported_and_left_out(install: Install, clock: Clock) -> None:
    """A plugin that fails to import is one problem line; the rest works."""
    module = install("raise RuntimeError('half-written plugin')\n")
    extensions = load_extensions()
    assert extensions.problems == (
        f"plugin {module} left out: cannot import it: "
        "RuntimeError: half-written plugin",
    )
    assert BUILTIN <= set(extensions.commands)


def test_collision_reported_and_left_out(install: Install) -> None:
    """A plugin command named like a built-in is reported and left out."""
    module = command_plugin(
        install, "who", "session.deliver(events.notice('hijacked'))"
    )
    extensions = load_extensions()
    assert extensions.problems == (
        f"plugin command /who from {module} left out: "
        "chatservice.plugins.builtin has one of that name already",
    )
    assert extensions.commands["who"].help == (
        "list who is in your room, or in ROOM, 30 to a page"
    )


def test_sources_described(
    install: Install, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each plugin module in use is named with its distribution, or its file if none installed it."""
    # Plugins installed where the tests run (the README's dice plugin, in
    # .venv) have lines of their own, which the test leaves aside.
    already = set(describe(load_extensions())[1:])
    installed = command_plugin(install, "hello", "pass")
    loose = command_plugin(install, "loose", "pass")
    site = tmp_path / "site"
    info = site / "chatservice_hello-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: chatservice-hello\nVersion: 1.2.3\n"
    )
    file = f"chatservice/plugins/{installed.rpartition('.')[2]}.py"
    (info / "RECORD").write_text(f"{file},,\n")
    monkeypatch.syspath_prepend(str(site))
    lines = [
        line
        for line in describe(load_extensions(frozenset({"msg"})))
        if line not in already
    ]
    loose_file = site / "chatservice" / "plugins" / f"{loose.rpartition('.')[2]}.py"
    assert lines == [
        lines[0],
        f"plugins: command /hello from {installed} (chatservice-hello 1.2.3)",
        f"plugins: command /loose from {loose} (no installed distribution: {loose_file})",
        "plugins left out by --disable-plugin: /msg",
    ]
    assert lines[0].startswith("plugins: commands /away, /ban, ")
    assert lines[0].endswith(
        f", /who from chatservice.plugins.builtin (chatservice {__version__})"
    )


def test_disable_plugin(clock: Clock) -> None:
    """--disable-plugin leaves a command out; an unknown name is reported."""
    extensions = load_extensions(frozenset({"msg", "nosuch"}))
    assert "msg" not in extensions.commands
    assert extensions.problems == ("--disable-plugin nosuch: there is no such plugin",)
    factory = ChatFactory(Settings(), clock=clock, extensions=extensions)
    alice = register(factory, "alice")
    alice.enter("/msg alice hi")
    assert alice.lines() == ["!!! unknown command /msg; type /help for the list"]


@pytest.mark.parametrize(
    "body",
    [
        "raise KeyError('oops')",
        "return defer.fail(ZeroDivisionError())",
    ],
)
def test_crashing_command(install: Install, clock: Clock, body: str) -> None:
    """A command that raises or fails gets a line naming it; nothing else breaks."""
    command_plugin(install, "crash", body)
    factory = ChatFactory(Settings(), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("/crash", "still here")
    assert alice.lines() == [
        "!!! /crash failed because of a server error; it was logged"
    ]
    assert bob.lines() == ["<alice> still here"]


def test_slow_command_delays_only_its_caller(install: Install, clock: Clock) -> None:
    """A slow command holds its caller's later lines, then times out."""
    command_plugin(install, "slow", "return defer.Deferred()")
    factory = ChatFactory(Settings(command_timeout=10), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("/slow", "after the slow one")
    bob.enter("bob is not held up")
    assert alice.lines() == ["<bob> bob is not held up"]
    assert bob.lines() == []
    clock.advance(10)
    assert alice.lines() == ["!!! /slow failed: it took too long and was cancelled"]
    assert bob.lines() == ["<alice> after the slow one"]


FILTERS = """
    from twisted.internet import defer
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from chatservice.errors import ChatError
    from chatservice.interfaces import IMessageFilter

    @implementer(IPlugin, IMessageFilter)
    class Filter:
        def __init__(self, name, function):
            self.name = name
            self.filter = function

    def refuse(session, room, text):
        if "spam" in text:
            raise ChatError("no spam, please")
        return text

    def crash(session, room, text):
        if "crash" in text:
            raise ValueError(text)
        return text

    a_refuse = Filter("a-refuse", refuse)
    b_rewrite = Filter("b-rewrite", lambda s, r, t: defer.succeed(t.replace("darn", "d*rn")))
    c_crash = Filter("c-crash", crash)
"""


@pytest.mark.parametrize(
    ("line", "seen_by_alice", "seen_by_bob"),
    [
        ("oh darn", [], ["<alice> oh d*rn"]),
        ("/me says darn", [], ["* alice says d*rn"]),
        ("buy spam", ["!!! no spam, please"], []),
        (
            "crash now",
            [
                "!!! your line was not sent: the c-crash filter failed because of a server error; it was logged"
            ],
            [],
        ),
    ],
)
def test_filters(
    install: Install,
    clock: Clock,
    line: str,
    seen_by_alice: list[str],
    seen_by_bob: list[str],
) -> None:
    """Filters see chat lines and actions and may pass, change or refuse them."""
    install(FILTERS)
    factory = ChatFactory(Settings(), clock=clock)
    assert [f.name for f in factory.filters] == ["a-refuse", "b-rewrite", "c-crash"]
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter(line)
    assert alice.lines() == seen_by_alice
    assert bob.lines() == seen_by_bob


def test_slow_filter_times_out(install: Install, clock: Clock) -> None:
    """A filter that never answers is cancelled after the command timeout."""
    install(
        FILTERS.replace(
            'c_crash = Filter("c-crash", crash)',
            'c_crash = Filter("c-crash", lambda s, r, t: defer.Deferred())',
        )
    )
    factory = ChatFactory(Settings(command_timeout=5), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("hello", "again")
    clock.advance(5)
    assert alice.lines() == [
        "!!! your line was not sent: the c-crash filter failed: "
        "it took too long and was cancelled"
    ]
    assert bob.lines() == []


def test_failure_with_fresh_cache_is_one_line(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that breaks after it was cached is still reported in one line."""
    module = install(
        """
        import os
        from chatservice.commands import command
        if os.environ.get("BREAK_PLUGIN"):
            raise SystemExit("broken at import")

        @command("/fine", "fine until it is not")
        def fine(session, args):
            pass
        """
    )
    assert "fine" in load_extensions().commands
    monkeypatch.setenv("BREAK_PLUGIN", "1")
    monkeypatch.delitem(sys.modules, module)
    extensions = load_extensions()
    assert "fine" not in extensions.commands
    assert extensions.problems == (
        f"plugin {module} left out: cannot import it: SystemExit: broken at import",
    )


# The examples, as their users see them ---------------------------------------


def test_example_dice(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """/roll shows the room the dice; bad dice are refused."""
    use_examples(monkeypatch)
    factory = ChatFactory(Settings(), clock=clock)
    from chatservice.plugins import dice  # type: ignore[attr-defined]

    monkeypatch.setattr(dice, "rng", random.Random(7))
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("/roll 3d6")
    expected = random.Random(7)
    rolls = [expected.randint(1, 6) for _ in range(3)]
    line = f"*** alice rolls 3d6: {' + '.join(map(str, rolls))} = {sum(rolls)}"
    assert alice.lines() == bob.lines() == [line]
    for spec, error in [
        ("lots", "!!! cannot roll 'lots': write dice as NdM, e.g. 2d6"),
        ("21d6", "!!! cannot roll 21d6: use 1 to 20 dice of 2 to 1000 sides"),
        ("1d1", "!!! cannot roll 1d1: use 1 to 20 dice of 2 to 1000 sides"),
    ]:
        alice.enter(f"/roll {spec}")
        assert alice.lines() == [error]
    assert bob.lines() == []


def test_example_capsfilter(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """Lines mostly in capitals are refused; short or calm ones pass."""
    use_examples(monkeypatch)
    factory = ChatFactory(Settings(), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("HELLO EVERYONE", "OK", "Hello Everyone In NYC")
    assert alice.lines() == [
        "!!! please don't shout: your line was not sent (at most 70% capital letters)"
    ]
    assert bob.lines() == ["<alice> OK", "<alice> Hello Everyone In NYC"]
    assert FakeConnection(factory).lines() == GREETING  # still serving others


# Session hooks plugins ---------------------------------------------------------

HOOKS = """
    from chatservice.hooks import SessionHooks

    class Greeter(SessionHooks):
        name = "{name}"

        def registered(self, session):
            session.deliver(b"*** {name} greets " + session.nickname.encode() + b"\\r\\n")

    {name} = Greeter()
"""


def test_hooks_plugin_found(install: Install, clock: Clock) -> None:
    """A hooks plugin is found by the scan, and the server calls its hooks."""
    module = install(HOOKS.format(name="greeter"))
    extensions = load_extensions()
    assert [hooks.name for hooks in extensions.hooks] == ["greeter"]
    assert describe(extensions)[-1] == (
        f"plugins: session hooks greeter from {module} "
        f"(no installed distribution: {sys.modules[module].__file__})"
    )
    factory = ChatFactory(Settings(), clock=clock, extensions=extensions)
    assert factory.hooks.plugins == extensions.hooks


def test_hooks_plugins_in_name_order(install: Install) -> None:
    """The server's hooks are the plugins found, in order of name."""
    install(HOOKS.format(name="zeta"))
    install(HOOKS.format(name="alpha"))
    assert [hooks.name for hooks in load_extensions().hooks] == ["alpha", "zeta"]


def test_disable_hooks_plugin(install: Install) -> None:
    """--disable-plugin NAME leaves a hooks plugin out, and says so."""
    install(HOOKS.format(name="greeter"))
    extensions = load_extensions(frozenset({"Greeter"}))
    assert extensions.hooks == ()
    assert extensions.disabled == ("greeter",)
    assert extensions.problems == ()


def test_hooks_name_taken(install: Install) -> None:
    """Of two hooks plugins with one name, the first module's is used."""
    first = install(HOOKS.format(name="greeter"))
    second = install(HOOKS.format(name="greeter"))
    extensions = load_extensions()
    assert len(extensions.hooks) == 1
    assert extensions.problems == (
        f"plugin hooks greeter from {second} left out: "
        f"{first} has one of that name already",
    )


def test_incomplete_hooks_left_out(install: Install) -> None:
    """A hooks plugin lacking a hook (not a SessionHooks) is left out, with why."""
    module = install(
        """
        from twisted.plugin import IPlugin
        from zope.interface import implementer
        from chatservice.interfaces import ISessionHooks

        @implementer(IPlugin, ISessionHooks)
        class Half:
            name = "half"

            def connected(self, session):
                pass

        half = Half()
        """
    )
    extensions = load_extensions()
    assert extensions.hooks == ()
    assert extensions.problems == (
        f"plugin hooks half from {module} left out: ISessionHooks needs registered, "
        "joined, left, said, acted, nick_changed, disconnected, which it lacks",
    )


def test_greeter_of_the_docs(install: Install, clock: Clock) -> None:
    """The greeter of docs/plugins.md greets with the lines said, as shown there."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    section = docs.split("\n## Observing sessions: hooks\n", 1)[1]
    source = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    install(source)
    factory = ChatFactory(Settings(resume_grace=0), clock=clock)
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice", "hi", "/me waves")
    assert alice.lines() == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
        "*** Hello alice: 0 lines so far.",
    ]
    bob = FakeConnection(factory)
    bob.output()
    bob.enter("bob")
    assert bob.lines()[-1] == "*** Hello bob: 2 lines so far."
