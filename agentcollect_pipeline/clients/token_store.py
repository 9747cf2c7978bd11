"""Where a rotating OAuth refresh token outlives the process (QuickBooks Online rotates it on use).

- `TokenStore` is a protocol with `get` and a compare-and-set `put`: a write names the version it
  replaces, so two processes that both rotated cannot silently overwrite each other.
- `WarehouseTokenStore` keeps the token in the project database (`oauth_tokens`), encrypted at rest with
  Fernet (AES-128-CBC + HMAC-SHA256) under a key from AGENTCOLLECT_TOKEN_ENCRYPTION_KEY. Without a key it
  refuses to start: a plaintext refresh token in a database dump is a standing credential to the books.
  Several comma-separated keys may be given to rotate the key: the first encrypts, any of them decrypts.
- `InMemoryTokenStore` is for tests and one-off scripts.

The refresh token is never part of a repr, a log line or an exception message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from agentcollect_pipeline.warehouse.oauth_schema import oauth_tokens
from agentcollect_pipeline.warehouse.store import Warehouse, dialect_insert

ENCRYPTION_KEY_VARIABLE = "AGENTCOLLECT_TOKEN_ENCRYPTION_KEY"


class TokenStoreError(RuntimeError):
    """The token store cannot be used as configured (no key, wrong key)."""


class TokenVersionConflict(RuntimeError):
    """Another writer changed the stored token since the version this write was based on."""


@dataclass(frozen=True)
class StoredToken:
    refresh_token: str = field(repr=False)
    version: int
    rotated_at: datetime
    refresh_expires_at: datetime | None = None
    # Keyed fingerprint of the configured bootstrap token that last seeded the row (never the token).
    seeded_from: str | None = None


class TokenStore(Protocol):
    def get(self, key: str) -> StoredToken | None: ...

    def put(
        self,
        key: str,
        refresh_token: str,
        *,
        expected_version: int | None,
        refresh_expires_at: datetime | None = None,
        seeded_from: str | None = None,
    ) -> StoredToken:
        """Store `refresh_token` if the stored version is still `expected_version` (None: no row yet).

        Raises TokenVersionConflict otherwise. `seeded_from=None` keeps the stored fingerprint."""
        ...


class InMemoryTokenStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, StoredToken] = {}

    def __repr__(self) -> str:
        return f"InMemoryTokenStore(keys={sorted(self._tokens)!r})"

    def get(self, key: str) -> StoredToken | None:
        with self._lock:
            return self._tokens.get(key)

    def put(
        self,
        key: str,
        refresh_token: str,
        *,
        expected_version: int | None,
        refresh_expires_at: datetime | None = None,
        seeded_from: str | None = None,
    ) -> StoredToken:
        with self._lock:
            current = self._tokens.get(key)
            if (current.version if current else None) != expected_version:
                raise TokenVersionConflict(f"token {key!r} changed since version {expected_version}")
            stored = StoredToken(
                refresh_token=refresh_token,
                version=(expected_version or 0) + 1,
                rotated_at=datetime.now(UTC),
                refresh_expires_at=refresh_expires_at,
                seeded_from=seeded_from if seeded_from is not None else (current.seeded_from if current else None),
            )
            self._tokens[key] = stored
            return stored


def fernet_from_key(key: str | None) -> MultiFernet:
    """The cipher for AGENTCOLLECT_TOKEN_ENCRYPTION_KEY; errors name the variable, never the value."""
    if key is None or not key.strip():
        raise TokenStoreError(
            f"{ENCRYPTION_KEY_VARIABLE} is not set: QuickBooks refresh tokens are stored encrypted and "
            "AgentCollect refuses to store them in clear. Generate a key with `python -c \"from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\"` and keep it "
            "in your secret manager."
        )
    ciphers = []
    for position, part in enumerate(p.strip() for p in key.split(",")):
        try:
            ciphers.append(Fernet(part.encode()))
        except (ValueError, TypeError):
            raise TokenStoreError(
                f"{ENCRYPTION_KEY_VARIABLE} (key #{position + 1}) is not a Fernet key: it must be 32 bytes "
                "in url-safe base64 (44 characters)"
            ) from None
    return MultiFernet(ciphers)


class WarehouseTokenStore:
    """`TokenStore` on the `oauth_tokens` table; every write is a compare-and-set on `version`."""

    def __init__(self, warehouse: Warehouse, encryption_key: str | None):
        self._cipher = fernet_from_key(encryption_key)
        self._warehouse = warehouse

    def __repr__(self) -> str:
        return "WarehouseTokenStore(table='oauth_tokens')"

    def get(self, key: str) -> StoredToken | None:
        with self._warehouse.engine.connect() as conn:
            row = conn.execute(sa.select(oauth_tokens).where(oauth_tokens.c.token_key == key)).first()
        if row is None:
            return None
        try:
            token = self._cipher.decrypt(row.refresh_token_encrypted.encode()).decode()
        except InvalidToken:
            raise TokenStoreError(
                f"the stored refresh token {key!r} cannot be decrypted with {ENCRYPTION_KEY_VARIABLE}: the "
                "key changed? Put the old key after the new one (comma-separated) to rotate keys."
            ) from None
        return StoredToken(
            refresh_token=token,
            version=row.version,
            rotated_at=row.rotated_at,
            refresh_expires_at=row.refresh_expires_at,
            seeded_from=row.seeded_from,
        )

    def put(
        self,
        key: str,
        refresh_token: str,
        *,
        expected_version: int | None,
        refresh_expires_at: datetime | None = None,
        seeded_from: str | None = None,
    ) -> StoredToken:
        now = datetime.now(UTC)
        values = {
            "refresh_token_encrypted": self._cipher.encrypt(refresh_token.encode()).decode(),
            "version": (expected_version or 0) + 1,
            "rotated_at": now,
            "refresh_expires_at": refresh_expires_at,
        }
        if seeded_from is not None:
            values["seeded_from"] = seeded_from
        with self._warehouse.transaction() as conn:
            if expected_version is None:
                statement = (
                    dialect_insert(conn, oauth_tokens)
                    .values(token_key=key, **values)
                    .on_conflict_do_nothing(index_elements=["token_key"])
                )
            else:
                statement = (
                    oauth_tokens.update()
                    .where(oauth_tokens.c.token_key == key, oauth_tokens.c.version == expected_version)
                    .values(**values)
                )
            if conn.execute(statement).rowcount != 1:
                raise TokenVersionConflict(f"token {key!r} changed since version {expected_version}")
        stored = self.get(key)
        assert stored is not None
        return stored
