"""The database handle: MONGO_URI if set, else the embedded database of the data folder."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from smib_core.embedded import mongo_uri
from smib_core.settings import Settings

# A database that is down fails an operation in about 3 s (PyMongoError), instead of
# holding its caller for 30 s; the same client works again once it answers (pymongo
# reconnects by itself, and the embedded database comes back on the same port). No
# socket timeout: one large read of the embedded database may legitimately take long.
SERVER_SELECTION_TIMEOUT_MS = 3_000
CONNECT_TIMEOUT_MS = 2_000


def client_for(uri: str) -> MongoClient[dict[str, Any]]:
    """A client with the options every part of SMIB Console uses (aware datetimes,
    short timeouts when the database is away)."""
    return MongoClient(
        uri,
        tz_aware=True,
        serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        connectTimeoutMS=CONNECT_TIMEOUT_MS,
    )


def connect(settings: Settings) -> Database[dict[str, Any]]:
    return client_for(mongo_uri(settings))[settings.mongo_db]
