"""C{chatservice-oper NAME}: make the operators-file line for an operator.

It asks for the password twice, without echo, and prints C{NAME HASH}: the
line to append to the file given to C{twistd chat --operators}.  The prompts
go to the terminal (or to standard error), so standard output holds only
that line::

    chatservice-oper alice >> /etc/chatservice/operators

With no terminal at all, as in a pipe from another program, the password
is read from standard input, one line each time it is asked for.
"""

import argparse
import getpass
import sys
import warnings

from ..operators import check_operator_name, hash_password

PROG = "chatservice-oper"


def main(argv: list[str] | None = None) -> int:
    """Run the command with C{argv} (default: C{sys.argv[1:]}); the exit code.

    0 when the line was printed, 1 when the password was empty, mistyped or
    not given, 2 for a mistake on the command line.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Ask for an operator's password and print the line for the "
            "chatservice operators file (twistd chat --operators FILE)."
        ),
        epilog=f"Example: {PROG} alice >> /etc/chatservice/operators",
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="the operator's name: 1 to 32 printable ASCII characters, no spaces",
    )
    args = parser.parse_args(argv)
    try:
        name = check_operator_name(args.name)
    except ValueError as e:
        return _fail(str(e), 2)
    try:
        with warnings.catch_warnings():
            # Without a terminal getpass says "Password input may be echoed"
            # itself; the warning would repeat it with a source line.
            warnings.simplefilter("ignore", getpass.GetPassWarning)
            password = getpass.getpass("Password: ")
            if not password:
                return _fail("the password is empty; nothing was printed", 1)
            if password != password.strip() or not password.isprintable():
                # /oper takes the rest of a chat line: its ends are trimmed
                # and control characters removed, so such a password could
                # never be typed there.
                return _fail(
                    "the password starts or ends with a space, or has a "
                    "control character; /oper could never match it; nothing "
                    "was printed",
                    1,
                )
            again = getpass.getpass("Again: ")
    except EOFError:
        return _fail("no password was given; nothing was printed", 1, mid_line=True)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was printed", 1, mid_line=True)
    if again != password:
        return _fail("the passwords differ; nothing was printed", 1)
    print(f"{name} {hash_password(password)}")
    return 0


def _fail(message: str, code: int, *, mid_line: bool = False) -> int:
    """Say what went wrong in one line on standard error; return C{code}.

    @param mid_line: Whether the cursor is still after a prompt (getpass
        ends its line only when it returns), so the line must be ended first.
    """
    start = "\n" if mid_line else ""
    print(f"{start}{PROG}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
