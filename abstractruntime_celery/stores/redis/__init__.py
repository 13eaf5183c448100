"""The Redis backend of the run and ledger stores (one folder, small modules):
``codec`` (a RunState to and from a record), ``runs`` (CRUD, fenced saves),
``queries`` (index walks), ``ledger`` (step records), ``connection`` (clients)."""

from .connection import connect
from .ledger import RedisLedgerStore
from .runs import RedisRunStore

__all__ = ["RedisRunStore", "RedisLedgerStore", "connect"]
