"""The one rule for firmware file names: what the library stores and the server serves.

A name must pass `protocol.ota_start` (letters, digits, `.-_`, ending `.bin`, at most
132 characters) and must not contain `..`, so that it can never be read as a path.
"""

from __future__ import annotations

import re

from smib_core import protocol
from smib_core.errors import InvalidInput

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_firmware_file_name(name: str) -> bool:
    """True when `name` is a file name a board may be told to download."""
    if not isinstance(name, str) or ".." in name:
        return False
    try:
        protocol.ota_start(name)
    except InvalidInput:
        return False
    return True


def firmware_file_name(product: str, version: str) -> str:
    """The served name of a firmware: `{product}_{version}.bin` with unsafe runs as `-`."""
    stem = _UNSAFE.sub("-", f"{product}_{version}")
    stem = re.sub(r"\.{2,}", ".", stem).strip("._-")
    name = f"{stem}.bin"
    if not is_firmware_file_name(name):
        raise InvalidInput(
            f"product {product!r} and version {version!r} do not make a usable file name: "
            "use letters, digits, '.', '-' or '_'"
        )
    return name
