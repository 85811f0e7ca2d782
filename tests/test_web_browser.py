"""The chat page in a real browser: Debian's chromium, driven by selenium (issue 17).

The server is C{twistd -n chat --port ... --web ...} in a subprocess (the
end-to-end test of C{--web}); two headless chromium pages and one telnet-style
socket talk in one room.  Without chromium and chromedriver the test fails,
never skips: C{.ci/run} installs them (C{apt-get install chromium
chromium-driver}).  Every wait is bounded.  The page's screenshot is kept in
C{test-artifacts/} (C{web-chat.png}, C{web-phone.png}, C{web-resumed.png}).
"""

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Connection, Server, free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: The longest any wait for the page may take.
WAIT = 15

XSS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=\"document.title='pwned'\">",
]


def _browser_parts() -> tuple[str, str]:
    """Debian's chromium and chromedriver; fails loudly if either is missing."""
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromedriver: "
            "apt-get install chromium chromium-driver (.ci/run does)",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture
def browsers() -> Iterator[Callable[[], object]]:
    """Start headless chromium pages; every one is quit after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_parts()
    started: list[webdriver.Chrome] = []

    def start() -> webdriver.Chrome:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1000,640",
            "--lang=en-GB",
        ):
            options.add_argument(argument)
        browser = webdriver.Chrome(service=Service(driver), options=options)
        browser.set_page_load_timeout(WAIT)
        browser.set_script_timeout(WAIT)
        started.append(browser)
        return browser

    try:
        yield start
    finally:
        for browser in started:
            browser.quit()


class Relay:
    """A TCP relay to the web port whose connections the test can cut.

    To the browser, a cut is the server closing the socket; to the server,
    the connection dropped: the session is held for a resume.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            server.settimeout(None)
            with self.lock:
                self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink), daemon=True
                ).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for each in (source, sink):
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Close every connection relayed so far, both ways."""
        with self.lock:
            cut, self.sockets = self.sockets, []
        for each in cut:
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            each.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def read_until(connection: Connection, wanted: str) -> list[str | None]:
    """The telnet user's lines up to the one C{wanted} (the socket's timeout bounds it)."""
    lines: list[str | None] = []
    while wanted not in lines:
        (line,) = connection.read()
        assert line is not None, f"closed before {wanted!r}: {lines}"
        lines.append(line)
    return lines


def test_two_browsers_and_a_telnet_user_chat(
    twistd: Callable[..., Server],
    connections: Callable[..., Connection],
    browsers: Callable[[], object],
) -> None:
    """Two pages and a telnet user see each other; HTML is text; a dropped page resumes."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    line_port, web_port = free_port(), free_port()
    server = twistd(
        f"tcp:{line_port}:interface=127.0.0.1",
        "--web",
        f"tcp:{web_port}:interface=127.0.0.1",
        "--max-connect-rate",
        "1000",
    )
    server.wait_for_port(line_port)
    server.wait_for_port(web_port)
    relay = Relay(web_port)
    try:
        alice, bob = browsers(), browsers()

        def log_of(browser: object) -> list[str]:
            items = browser.find_elements(By.CSS_SELECTOR, "#log li")  # type: ignore[attr-defined]
            return [item.text for item in items]

        def wait_for(browser: object, text: str) -> None:
            """Wait until a line of the page's log ends with C{text}."""
            WebDriverWait(browser, WAIT).until(
                lambda b: any(line.endswith(text) for line in log_of(b)),
                f"{text!r} in the page: {log_of(browser)}\n{server.output()}",
            )

        def type_in(browser: object, text: str) -> None:
            box = browser.find_element(By.ID, "input")  # type: ignore[attr-defined]
            box.send_keys(text, Keys.ENTER)

        # alice comes through the relay, which the test will cut; bob straight.
        alice.get(f"http://127.0.0.1:{relay.port}/")  # type: ignore[attr-defined]
        bob.get(f"http://127.0.0.1:{web_port}/")  # type: ignore[attr-defined]
        for browser, nick in ((alice, "alice"), (bob, "bob")):
            wait_for(
                browser, "Choose a nickname: type it in the box below and press Enter."
            )
            type_in(browser, nick)
            WebDriverWait(browser, WAIT).until(
                lambda b, nick=nick: (
                    b.find_element(By.ID, "status").text == f"connected as {nick}"
                ),
                f"{nick} registered",
            )
        carol = connections(line_port)
        carol.read(2)
        carol.send("carol")
        read_until(carol, "*** Type /help for the commands.")
        wait_for(alice, "carol has joined #lobby")

        type_in(alice, "hello from alice")
        wait_for(bob, "<alice> hello from alice")
        assert read_until(carol, "<alice> hello from alice")
        type_in(bob, "/me waves")
        wait_for(alice, "* bob waves")
        carol.send("hi browsers")
        wait_for(alice, "hi browsers")
        wait_for(bob, "hi browsers")
        members = alice.find_element(By.ID, "member-list").text.split()  # type: ignore[attr-defined]
        assert members == ["alice", "bob", "carol"]
        carol.send("/topic Plans for Saturday")
        wait_for(alice, "carol set the topic of #lobby: Plans for Saturday")
        ARTIFACTS.mkdir(exist_ok=True)
        alice.save_screenshot(str(ARTIFACTS / "web-chat.png"))  # type: ignore[attr-defined]

        # HTML from anyone is text: shown as typed, nothing runs.
        for text in XSS:
            carol.send(text)
        carol.send("/topic <b>bold</b> <img src=x onerror=alert(2)>")
        wait_for(alice, XSS[-1])
        wait_for(alice, "<b>bold</b> <img src=x onerror=alert(2)>")
        for browser in (alice, bob):
            wait_for(browser, XSS[0])
            assert (
                browser.find_elements(
                    By.CSS_SELECTOR, "#log img, #log script, #topic *"
                )
                == []
            )  # type: ignore[attr-defined]
            assert browser.title == "chatservice"  # type: ignore[attr-defined]
            with pytest.raises(NoAlertPresentException):
                _ = browser.switch_to.alert.text  # type: ignore[attr-defined]
        assert (
            alice.find_element(By.ID, "topic").text
            == "<b>bold</b> <img src=x onerror=alert(2)>"
        )  # type: ignore[attr-defined]

        # On a phone's width: no sideways scrolling; the people list behind
        # a button.
        bob.set_window_size(390, 640)  # type: ignore[attr-defined]
        toggle = bob.find_element(By.ID, "members-toggle")  # type: ignore[attr-defined]
        people = bob.find_element(By.ID, "members")  # type: ignore[attr-defined]
        WebDriverWait(bob, WAIT).until(lambda b: toggle.is_displayed(), "the button")
        assert not people.is_displayed()
        toggle.click()
        assert people.is_displayed()
        width = "return [document.documentElement.scrollWidth, window.innerWidth]"
        scrolled, window = bob.execute_script(width)  # type: ignore[attr-defined]
        assert scrolled <= window
        bob.save_screenshot(str(ARTIFACTS / "web-phone.png"))  # type: ignore[attr-defined]

        # The view follows new lines at the bottom, and stays put when the
        # reader has scrolled up.
        position = (
            "const log = document.getElementById('log');"
            "return [log.scrollTop, log.scrollHeight - log.clientHeight];"
        )
        for n in range(12):
            carol.send(f"filler {n}")
        wait_for(bob, "filler 11")
        top, bottom = bob.execute_script(position)  # type: ignore[attr-defined]
        assert bottom > 0 and abs(top - bottom) <= 1, (top, bottom)
        bob.execute_script("document.getElementById('log').scrollTop = 0")  # type: ignore[attr-defined]
        carol.send("while bob reads back")
        wait_for(bob, "while bob reads back")
        top, bottom = bob.execute_script(position)  # type: ignore[attr-defined]
        assert top == 0, "the view jumped while its reader was scrolled up"

        # The server loses alice's connection: the page reconnects, resumes,
        # and shows what was said meanwhile.
        relay.cut()
        read_until(carol, "*** alice lost connection")
        carol.send("did you miss me, alice?")
        wait_for(alice, "did you miss me, alice?")
        read_until(carol, "*** alice is back")
        assert any(
            line.endswith("Reconnected: 1 missed line(s) follow.")
            for line in log_of(alice)
        ), log_of(alice)
        type_in(alice, "back again")
        read_until(carol, "<alice> back again")

        greetings = [line for line in log_of(alice) if line.endswith("press Enter.")]
        assert len(greetings) == 1, "the greeting again after the reconnection"
        alice.save_screenshot(str(ARTIFACTS / "web-resumed.png"))  # type: ignore[attr-defined]
    finally:
        relay.close()
