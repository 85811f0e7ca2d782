"""Tests for chatservice.operators: password hashes and the operators file."""

import base64
from pathlib import Path

import pytest

from chatservice.operators import (
    Operators,
    OperatorsFileError,
    check_operator_name,
    hash_password,
    load_operators,
    verify_password,
)

#: Cheap scrypt parameters, so that the tests run fast.
FAST = {"n": 2**10, "r": 8, "p": 1}


def fast_hash(password: str) -> str:
    """A hash of C{password} with the cheap test parameters."""
    return hash_password(password, **FAST)


def b64(data: bytes) -> str:
    """Unpadded URL-safe base64, as the hashes use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(tmp_path: Path, text: str) -> str:
    """Write an operators file holding C{text}; return its path."""
    path = tmp_path / "operators"
    path.write_text(text)
    return str(path)


def test_default_hash_round_trip() -> None:
    """A hash made with the defaults accepts its password and nothing else."""
    encoded = hash_password("correct horse")
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.urlsafe_b64decode(salt + "==")) == 16
    assert len(base64.urlsafe_b64decode(key + "=")) == 32
    assert "=" not in encoded
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horse ", encoded)


def test_wrong_password() -> None:
    """A wrong password is refused."""
    assert not verify_password("guess", fast_hash("secret"))


def test_salted() -> None:
    """The same password hashes differently each time, and both verify."""
    first, second = fast_hash("secret"), fast_hash("secret")
    assert first != second
    assert verify_password("secret", first)
    assert verify_password("secret", second)


def test_given_salt_is_repeatable() -> None:
    """A given salt gives the same hash every time."""
    salt = b"0123456789abcdef"
    encoded = hash_password("secret", salt=salt, **FAST)
    assert encoded == hash_password("secret", salt=salt, **FAST)
    assert encoded.split("$")[4] == b64(salt)


def test_non_default_parameters_verify() -> None:
    """A hash made with other parameters verifies with those parameters."""
    encoded = hash_password("secret", n=2**11, r=4, p=2)
    assert encoded.startswith("scrypt$2048$4$2$")
    assert verify_password("secret", encoded)
    assert not verify_password("Secret", encoded)


def test_non_ascii_password() -> None:
    """Passwords are Unicode text."""
    encoded = fast_hash("pässwörd ☃")
    assert verify_password("pässwörd ☃", encoded)
    assert not verify_password("passwort ☃", encoded)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"n": 1000}, "N must be a power of two from 1024 to 1048576"),
        ({"n": 512}, "N must be a power of two from 1024 to 1048576"),
        ({"n": 2**21}, "N must be a power of two from 1024 to 1048576"),
        ({"r": 0}, "R must be from 1 to 32"),
        ({"p": 17}, "P must be from 1 to 16"),
        ({"n": 2**20, "r": 16}, "N and R need more than 1024 MiB of memory"),
        ({"salt": b"short"}, "the salt is shorter than 8 bytes"),
    ],
)
def test_hash_parameters_checked(kwargs: dict[str, object], why: str) -> None:
    """Parameters out of bounds are refused when hashing."""
    arguments = {**FAST, **kwargs}
    with pytest.raises(ValueError) as caught:
        hash_password("secret", **arguments)  # type: ignore[arg-type]
    assert str(caught.value) == why


SALT = b64(b"0123456789abcdef")
KEY = b64(bytes(32))


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "secret",
        "scrypt",
        f"scrypt$1024$8$1${SALT}",
        f"scrypt$1024$8$1${SALT}${KEY}$extra",
        f"bcrypt$1024$8$1${SALT}${KEY}",
        f"scrypt$1000$8$1${SALT}${KEY}",
        f"scrypt$512$8$1${SALT}${KEY}",
        f"scrypt$1024$0$1${SALT}${KEY}",
        f"scrypt$1024$8$0${SALT}${KEY}",
        f"scrypt$1024$8$99${SALT}${KEY}",
        f"scrypt$+1024$8$1${SALT}${KEY}",
        f"scrypt$1_024$8$1${SALT}${KEY}",
        f"scrypt$1024$８$1${SALT}${KEY}",
        f"scrypt$1024$8$1$$${KEY}",
        f"scrypt$1024$8$1${SALT}$",
        f"scrypt$1024$8$1${SALT}=${KEY}",
        f"scrypt$1024$8$1${SALT}$not*base64",
        f"scrypt$1024$8$1${SALT}${KEY[:-1]}",
        f"scrypt$1024$8$1${b64(b'salt')}${KEY}",
        f"scrypt$1024$8$1${SALT}${b64(bytes(8))}",
        f"scrypt$1024$8$1${SALT}${b64(bytes(65))}",
        f"scrypt$1024$8$1${SALT}${KEY[:-1]}B",
    ],
)
def test_malformed_hash_is_false(encoded: str) -> None:
    """A malformed hash refuses every password, without raising."""
    assert verify_password("secret", encoded) is False


def test_operators_check() -> None:
    """An operator's own password is accepted; others are not."""
    operators = Operators({"alice": fast_hash("wonderland"), "Bob": fast_hash("b")})
    assert operators.check("alice", "wonderland")
    assert not operators.check("alice", "b")
    assert operators.check("Bob", "b")


def test_unknown_name_is_refused() -> None:
    """A name that is not an operator is refused, whatever the password."""
    operators = Operators({"alice": fast_hash("wonderland")})
    assert not operators.check("mallory", "wonderland")
    assert not operators.check("", "")


def test_names_are_case_sensitive() -> None:
    """Operator names are case-sensitive."""
    operators = Operators({"alice": fast_hash("wonderland")})
    assert not operators.check("Alice", "wonderland")
    assert "alice" in operators
    assert "Alice" not in operators


def test_empty_operators() -> None:
    """With no operators, nobody is one."""
    operators = Operators()
    assert len(operators) == 0
    assert operators.names() == []
    assert not operators.check("alice", "")


def test_operators_refuse_bad_entries() -> None:
    """Operators built by hand refuse a plain-text password."""
    with pytest.raises(ValueError) as caught:
        Operators({"alice": "wonderland"})
    assert str(caught.value) == (
        "the password of alice: expected scrypt$N$R$P$SALT$HASH"
    )


def test_load_file(tmp_path: Path) -> None:
    """Comments and blank lines are skipped; each other line is NAME HASH."""
    alice, bob = fast_hash("wonderland"), fast_hash("builder")
    path = write(
        tmp_path,
        f"# operators of the chat\n\n   \n  # indented comment\n"
        f"alice {alice}\n\tBob\t  {bob}   \r\n",
    )
    assert load_operators(path) == {"alice": alice, "Bob": bob}
    operators = Operators.from_file(path)
    assert operators.names() == ["Bob", "alice"]
    assert operators.check("Bob", "builder")
    assert not operators.check("bob", "builder")


def test_load_empty_file(tmp_path: Path) -> None:
    """An empty file has no operators."""
    assert load_operators(write(tmp_path, "")) == {}


def test_load_hash_with_other_parameters(tmp_path: Path) -> None:
    """A file may hold hashes made with parameters other than the defaults."""
    encoded = hash_password("secret", n=2**12, r=2, p=3)
    operators = Operators.from_file(write(tmp_path, f"carol {encoded}\n"))
    assert operators.check("carol", "secret")


def test_plain_text_password_refused(tmp_path: Path) -> None:
    """A plain-text password is refused, with the command that makes a hash."""
    path = write(tmp_path, f"# ops\nbob {fast_hash('b')}\nalice wonderland\n")
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(path)
    assert str(caught.value) == (
        f"chatservice: --operators {path} line 3: the password of alice is not "
        "a scrypt hash (plain-text passwords are refused); make a line with: "
        "chatservice-oper alice"
    )
    assert caught.value.line == 3


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is one line with the reason from the system."""
    path = str(tmp_path / "nowhere")
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(path)
    assert str(caught.value) == (
        f"chatservice: --operators {path}: cannot be read: No such file or directory"
    )


def test_directory(tmp_path: Path) -> None:
    """A directory is not an operators file."""
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(str(tmp_path))
    assert str(caught.value) == (
        f"chatservice: --operators {tmp_path}: cannot be read: Is a directory"
    )


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without read permission is one line saying so."""
    path = write(tmp_path, "")

    def refuse(name: str, mode: str = "r") -> None:
        raise PermissionError(13, "Permission denied", name)

    # The tests run as root, who may read anything: refuse as the OS would.
    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(path)
    assert str(caught.value) == (
        f"chatservice: --operators {path}: cannot be read: Permission denied"
    )


VALID = hash_password("x", salt=b"0123456789abcdef", **FAST)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice\n", "line 1: expected 2 fields, NAME and HASH, but found 1"),
        (
            f"alice {VALID} # comment\n",
            "line 1: expected 2 fields, NAME and HASH, but found 4",
        ),
        (
            "\n\nalice my secret\n",
            "line 3: expected 2 fields, NAME and HASH, but found 3",
        ),
        (
            f"{'a' * 33} {VALID}\n",
            f"line 1: invalid operator name '{'a' * 33}': use 1 to 32 printable "
            "ASCII characters, without spaces and not starting with #",
        ),
        (
            f"ålice {VALID}\n",
            "line 1: invalid operator name 'ålice': use 1 to 32 printable "
            "ASCII characters, without spaces and not starting with #",
        ),
        (
            f"al\x01ce {VALID}\n",
            "line 1: invalid operator name 'al\\x01ce': use 1 to 32 printable "
            "ASCII characters, without spaces and not starting with #",
        ),
        (
            f"alice {VALID}\nbob {VALID}\nalice {VALID}\n",
            "line 3: the operator alice is already on line 1",
        ),
        (
            f"alice {VALID.replace('$1024$', '$1000$')}\n",
            "line 1: the password of alice is a malformed scrypt hash (N must be "
            "a power of two from 1024 to 1048576); make a line with: "
            "chatservice-oper alice",
        ),
        (
            f"alice {VALID.replace('$1024$', '$512$')}\n",
            "line 1: the password of alice is a malformed scrypt hash (N must be "
            "a power of two from 1024 to 1048576); make a line with: "
            "chatservice-oper alice",
        ),
        (
            f"alice {VALID.replace('$8$1$', '$0$1$')}\n",
            "line 1: the password of alice is a malformed scrypt hash (R must be "
            "from 1 to 32); make a line with: chatservice-oper alice",
        ),
        (
            f"alice {VALID.replace('$8$1$', '$8$x$')}\n",
            "line 1: the password of alice is a malformed scrypt hash (N, R and P "
            "must be decimal numbers); make a line with: chatservice-oper alice",
        ),
        (
            "alice scrypt$1024$8$1$abc\n",
            "line 1: the password of alice is a malformed scrypt hash (expected "
            "scrypt$N$R$P$SALT$HASH); make a line with: chatservice-oper alice",
        ),
        (
            f"alice scrypt$1024$8$1${SALT}${KEY[:-1]}B\n",
            "line 1: the password of alice is a malformed scrypt hash (the hash is "
            "not unpadded URL-safe base64); make a line with: chatservice-oper alice",
        ),
        (
            f"alice scrypt$1024$8$1${SALT}${b64(bytes(14))}\n",
            "line 1: the password of alice is a malformed scrypt hash (the hash is "
            "14 bytes, not 16 to 64); make a line with: chatservice-oper alice",
        ),
        (
            f"alice scrypt$1024$8$1$c2FsdA${KEY}\n",
            "line 1: the password of alice is a malformed scrypt hash (the salt is "
            "shorter than 8 bytes); make a line with: chatservice-oper alice",
        ),
        (
            f"alice scrypt$1024$8$1$sa+t/123${KEY}\n",
            "line 1: the password of alice is a malformed scrypt hash (the salt is "
            "not unpadded URL-safe base64); make a line with: chatservice-oper alice",
        ),
    ],
)
def test_file_errors(tmp_path: Path, text: str, problem: str) -> None:
    """Each mistake in the file is one line naming the file, line and fault."""
    path = write(tmp_path, text)
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(path)
    assert str(caught.value) == f"chatservice: --operators {path} {problem}"


def test_file_not_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are an error on their line."""
    path = tmp_path / "operators"
    path.write_bytes(b"# ops\n\nal\xffce " + VALID.encode() + b"\n")
    with pytest.raises(OperatorsFileError) as caught:
        load_operators(str(path))
    assert str(caught.value) == (
        f"chatservice: --operators {path} line 3: the line is not UTF-8 text"
    )


@pytest.mark.parametrize("name", ["a", "alice", "Bob", "x" * 32, "a.b@c!", "a#b"])
def test_valid_operator_names(name: str) -> None:
    """Names are 1 to 32 printable ASCII characters other than space."""
    assert check_operator_name(name) == name


@pytest.mark.parametrize("name", ["", "x" * 33, "a b", "#ops", "tab\there", "ålice"])
def test_invalid_operator_names(name: str) -> None:
    """Empty, long, spaced, non-ASCII and comment-like names are refused."""
    with pytest.raises(ValueError, match="^invalid operator name "):
        check_operator_name(name)
