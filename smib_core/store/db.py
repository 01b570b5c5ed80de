"""The database handle: MONGO_URI if set, else the embedded database of the data folder."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from smib_core.embedded import mongo_uri
from smib_core.settings import Settings


def client_for(uri: str) -> MongoClient[dict[str, Any]]:
    """A client with the options every part of SMIB Console uses (aware datetimes)."""
    return MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10_000)


def connect(settings: Settings) -> Database[dict[str, Any]]:
    return client_for(mongo_uri(settings))[settings.mongo_db]
