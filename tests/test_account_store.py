"""One suite for every IAccountStore: in memory, SQLite and PostgreSQL."""

from collections.abc import AsyncIterator

import pytest
import pytest_twisted

from twisted.internet.defer import gatherResults
from zope.interface.verify import verifyObject

from chatservice.accounts import Account, Letter, MemoryAccountStore
from chatservice.interfaces import IAccountStore
from chatservice.store import Store, memory_store
from chatservice.store.accounts import StoreAccounts

ALICE = Account("Alice", "alice@example.org", "scrypt$hash", 1_700_000_000.0)


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "postgresql"])
async def accounts(request: pytest.FixtureRequest) -> AsyncIterator[IAccountStore]:
    """An empty account store of each kind (PostgreSQL: a real server)."""
    if request.param == "memory":
        yield MemoryAccountStore()
        return
    if request.param == "sqlite":
        yield StoreAccounts(memory_store())
        return
    store = Store(request.getfixturevalue("postgres"))
    store.open()
    try:
        yield StoreAccounts(store)
    finally:
        store.close()


def letter(text: str, sender: str = "bob", when: float = 1.0) -> Letter:
    return Letter(when, sender, text)


def test_interface(accounts: IAccountStore) -> None:
    """Every store provides IAccountStore."""
    assert verifyObject(IAccountStore, accounts)


@pytest_twisted.ensureDeferred
async def test_create_get_names(accounts: IAccountStore) -> None:
    """An account made is found by its key, and listed; a second is refused."""
    assert await accounts.get("alice") is None
    assert await accounts.create("alice", ALICE) is True
    assert await accounts.create("alice", ALICE) is False
    assert await accounts.get("alice") == ALICE
    assert await accounts.names() == ["alice"]


@pytest_twisted.ensureDeferred
async def test_set_password(accounts: IAccountStore) -> None:
    """A new password hash replaces the old; none for an unknown key."""
    await accounts.create("alice", ALICE)
    assert await accounts.set_password("alice", "scrypt$new") is True
    assert (await accounts.get("alice")).password == "scrypt$new"
    assert await accounts.set_password("bob", "scrypt$new") is False


@pytest_twisted.ensureDeferred
async def test_letters_in_order_taken_once(accounts: IAccountStore) -> None:
    """Letters come back oldest first, once."""
    await accounts.create("alice", ALICE)
    for number in range(3):
        assert await accounts.leave("alice", letter(f"m{number}"), 100, 65536)
    assert await accounts.take("alice") == [letter("m0"), letter("m1"), letter("m2")]
    assert await accounts.take("alice") == []


@pytest_twisted.ensureDeferred
async def test_letters_only_for_accounts(accounts: IAccountStore) -> None:
    """A letter for a key without an account is not kept."""
    assert await accounts.leave("nobody", letter("hi"), 100, 65536) is False
    assert await accounts.take("nobody") == []


@pytest.mark.parametrize(
    ("max_messages", "max_bytes", "kept"), [(2, 65536, 2), (100, 3 * 7, 3)]
)
@pytest_twisted.ensureDeferred
async def test_mailbox_bounds(
    accounts: IAccountStore, max_messages: int, max_bytes: int, kept: int
) -> None:
    """Past the most messages, or bytes of sender and text, letters are refused."""
    await accounts.create("alice", ALICE)
    results = [
        await accounts.leave("alice", letter("text"), max_messages, max_bytes)
        for _ in range(5)
    ]
    assert results == [True] * kept + [False] * (5 - kept)
    assert len(await accounts.take("alice")) == kept


@pytest_twisted.ensureDeferred
async def test_delete_takes_letters(accounts: IAccountStore) -> None:
    """Deleting an account deletes its letters; a second delete finds none."""
    await accounts.create("alice", ALICE)
    await accounts.leave("alice", letter("hi"), 100, 65536)
    assert await accounts.delete("alice") is True
    assert await accounts.delete("alice") is False
    await accounts.create("alice", ALICE)
    assert await accounts.take("alice") == []
    assert await accounts.get("bob") is None


@pytest_twisted.ensureDeferred
async def test_concurrent_letters_keep_the_bound(accounts: IAccountStore) -> None:
    """Letters left at once (several connections) still stop at the bound."""
    await accounts.create("alice", ALICE)
    results = await gatherResults(
        [accounts.leave("alice", letter(f"m{n}"), 5, 65536) for n in range(12)]
    )
    assert sorted(results) == [False] * 7 + [True] * 5
    assert len(await accounts.take("alice")) == 5


@pytest_twisted.ensureDeferred
async def test_concurrent_takes_deliver_each_letter_once(
    accounts: IAccountStore,
) -> None:
    """Takes at once (two nodes' sessions identifying) hand out each letter exactly once."""
    await accounts.create("alice", ALICE)
    calls = []
    for n in range(40):
        calls.append(accounts.leave("alice", letter(f"m{n}"), 100, 65536))
        if n % 5 == 4:
            calls.append(accounts.take("alice"))
    calls.append(accounts.take("alice"))
    results = await gatherResults(calls)
    taken = [x.text for r in results if isinstance(r, list) for x in r]
    taken += [x.text for x in await accounts.take("alice")]
    assert sorted(taken) == sorted(f"m{n}" for n in range(40))
