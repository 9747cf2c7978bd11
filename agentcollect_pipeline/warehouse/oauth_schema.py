"""OAuth refresh tokens of AR sources that rotate them (QuickBooks Online), on `schema.metadata`.

One row per connected company. The token is Fernet-encrypted (see clients/token_store.py); `version`
makes every write a compare-and-set, so two processes cannot silently overwrite each other's rotation.
"""

from __future__ import annotations

import sqlalchemy as sa

from agentcollect_pipeline.warehouse.schema import UTCDateTime, metadata

oauth_tokens = sa.Table(
    "oauth_tokens",
    metadata,
    sa.Column("token_key", sa.Text, primary_key=True, comment="provider:company, e.g. qbo:<realm id>"),
    sa.Column("refresh_token_encrypted", sa.Text, nullable=False, comment="Fernet token; never the plaintext"),
    sa.Column("version", sa.Integer, nullable=False, comment="bumped on every rotation; the compare-and-set guard"),
    sa.Column("rotated_at", UTCDateTime, nullable=False),
    sa.Column("refresh_expires_at", UTCDateTime, nullable=True, comment="from x_refresh_token_expires_in"),
    sa.Column(
        "seeded_from",
        sa.Text,
        nullable=True,
        comment="keyed fingerprint of the configured bootstrap token that last seeded this row",
    ),
)
