"""
The OCPP transactions table (evnet.central.ocpp.transactions) on the real
Store (SQLite, and the test MariaDB), and the in-memory fake the station's
unit tests use, held to the same contract.
"""

import pytest
import pytest_twisted

from evnet.central.ocpp.transactions import Transaction, TransactionStore
from evnet.central.store import Store, parse_db_url
from tests.network import within
from tests.ocpp_fakes import MemoryTransactions
from tests.test_store import BACKENDS, WAIT, database_url


@pytest.fixture(params=["memory", *BACKENDS])
def transactions(request, tmp_path):
    if request.param == "memory":
        yield None, MemoryTransactions()
        return
    with database_url(request.param, tmp_path) as url:
        store = Store(parse_db_url(url))
        try:
            yield store, TransactionStore(store)
        finally:
            store.close()


def bounded(d, what):
    return within(d, WAIT, what)


@pytest_twisted.ensureDeferred
async def test_transaction_ids_their_sessions_and_their_end(transactions):
    store, table = transactions
    if store is not None:
        await bounded(store.start(), "store.start")
        await bounded(table.start(), "table.start")
        await bounded(table.start(), "table.start again")  # idempotent, as at every start
    first = await bounded(table.open("CP01", "S1", 1000.0, 1767261600.0, 0.4, 0.05), "open S1")
    assert first == Transaction(1, "CP01", "S1", 1000.0, 1767261600.0, 0.4, 0.05)
    again = await bounded(table.open("CP01", "S1", 1000.0, 1767261600.0, 0.4, 0.05), "open S1 again")
    assert again.transaction_id == 1  # a repeated StartTransaction keeps its id
    refused = await bounded(table.open("CP01", None, 5.0, 1767261601.0, 0.0, 0.0), "open refused")
    other = await bounded(table.open("CP02", "S2", 0.0, 1767261602.0, 0.3, 0.0), "open S2")
    assert (refused.transaction_id, refused.session_id, other.transaction_id) == (2, None, 3)
    assert await bounded(table.get(3), "get 3") == other
    assert await bounded(table.get(99), "get 99") is None
    assert (await bounded(table.of_session("S1"), "of S1")).transaction_id == 1
    assert await bounded(table.of_session("S9"), "of S9") is None
    await bounded(table.stopped(1, 1767261700.0), "stopped 1")
    await bounded(table.stopped(1, 1767261800.0), "stopped 1 again")  # the first end stays
    assert (await bounded(table.get(1), "get 1")).stopped_at == 1767261700.0
