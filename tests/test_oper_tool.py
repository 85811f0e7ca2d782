"""Tests for chatservice-oper, the helper that makes operators-file lines."""

import getpass
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from chatservice.operators import Operators, load_operators
from chatservice.tools import oper


def answers(
    monkeypatch: pytest.MonkeyPatch, *replies: str | type[BaseException]
) -> list[str]:
    """Make getpass return C{replies} in turn (or raise them); list the prompts."""
    prompts: list[str] = []
    queue = list(replies)

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        reply = queue.pop(0)
        if isinstance(reply, str):
            return reply
        raise reply

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return prompts


def test_prints_a_line_that_loads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The printed line, appended to a file, makes an operator with that password."""
    prompts = answers(monkeypatch, "wonder land", "wonder land")
    assert oper.main(["alice"]) == 0
    out, err = capsys.readouterr()
    assert prompts == ["Password: ", "Again: "]
    assert err == ""
    assert out.startswith("alice scrypt$16384$8$1$")
    assert out.count("\n") == 1
    path = tmp_path / "operators"
    path.write_text("# chat operators\n" + out)
    assert list(load_operators(str(path))) == ["alice"]
    operators = Operators.from_file(str(path))
    assert operators.check("alice", "wonder land")
    assert not operators.check("alice", "wonderland")


def test_mismatch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two different passwords print nothing and exit 1 with one line."""
    answers(monkeypatch, "secret", "secrte")
    assert oper.main(["alice"]) == 1
    assert capsys.readouterr() == (
        "",
        "chatservice-oper: the passwords differ; nothing was printed\n",
    )


def test_empty_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty password is refused at once, without asking again."""
    prompts = answers(monkeypatch, "")
    assert oper.main(["alice"]) == 1
    assert prompts == ["Password: "]
    assert capsys.readouterr() == (
        "",
        "chatservice-oper: the password is empty; nothing was printed\n",
    )


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (EOFError, "no password was given; nothing was printed"),
        (KeyboardInterrupt, "interrupted; nothing was printed"),
    ],
)
def test_no_password(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: type[BaseException],
    message: str,
) -> None:
    """End of input or Ctrl-C at a prompt ends that line and says why."""
    answers(monkeypatch, "secret", error)
    assert oper.main(["alice"]) == 1
    assert capsys.readouterr() == ("", f"\nchatservice-oper: {message}\n")


@pytest.mark.parametrize("name", ["a b", "", "#ops", "x" * 33, "ålice"])
def test_bad_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A name the operators file would refuse exits 2 before asking anything."""
    prompts = answers(monkeypatch)
    assert oper.main([name]) == 2
    assert prompts == []
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"chatservice-oper: invalid operator name {name!r}: use 1 to 32 printable "
        "ASCII characters, without spaces and not starting with #\n"
    )


def test_no_name(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a name, the usage is shown and the exit code is 2."""
    with pytest.raises(SystemExit) as caught:
        oper.main([])
    assert caught.value.code == 2
    assert "usage: chatservice-oper [-h] NAME" in capsys.readouterr().err


def installed_script() -> str:
    """The installed chatservice-oper console script; fails the test if none."""
    # The interpreter's own scripts directory first: it need not be on PATH
    # (a virtualenv that is not activated).
    search = os.pathsep.join(
        [sysconfig.get_path("scripts"), os.environ.get("PATH", os.defpath)]
    )
    script = shutil.which("chatservice-oper", path=search)
    if script is None:
        pytest.fail("chatservice-oper is not installed: run pip install -e '.[test]'")
    return script


def test_console_script(tmp_path: Path) -> None:
    """The installed command reads a piped password and prints a working line.

    getpass reads from /dev/tty when the process has a controlling terminal,
    whatever standard input is; in a new session there is none, so it falls
    back to standard input, one line per prompt.
    """
    result = subprocess.run(
        [installed_script(), "carol"],
        input="s3cret pass\ns3cret pass\n",
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Password: " in result.stderr
    assert "GetPassWarning" not in result.stderr
    path = tmp_path / "operators"
    path.write_text(result.stdout)
    operators = Operators.from_file(str(path))
    assert operators.names() == ["carol"]
    assert operators.check("carol", "s3cret pass")


@pytest.mark.parametrize("password", [" secret", "secret ", "sec\tret"])
def test_password_that_oper_could_not_match(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    password: str,
) -> None:
    """A password /oper would trim or clean is refused, with the reason."""
    answers(monkeypatch, password, password)
    assert oper.main(["alice"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "/oper could never match it" in err
