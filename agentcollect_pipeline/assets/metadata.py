"""Metadata helpers shared by every asset group: column schemas, masked previews."""

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from agentcollect_pipeline.warehouse.store import column_schema_rows

# Columns that identify a person: masked in previews, which anyone with UI access can read.
_EMAIL_COLUMNS = ("email",)
_PHONE_COLUMNS = ("phone", "phone_e164", "alt_phone")


def column_schema(table: sa.Table) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, dtype, description=comment) for name, dtype, comment in column_schema_rows(table)]
    )


def definition_metadata(table: sa.Table) -> dict:
    return {"dagster/column_schema": column_schema(table), "dagster/table_name": table.name}


def mask_email(value: object) -> object:
    if not isinstance(value, str) or "@" not in value:
        return value
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(value: object) -> object:
    if not isinstance(value, str) or len(value) < 4:
        return value
    return "*" * (len(value) - 4) + value[-4:]


def preview(frame: pd.DataFrame) -> dg.MetadataValue:
    sample = frame.copy()
    for column in sample.columns:
        if column in _EMAIL_COLUMNS:
            sample[column] = sample[column].map(mask_email)
        elif column in _PHONE_COLUMNS:
            sample[column] = sample[column].map(mask_phone)
    return dg.MetadataValue.md(sample.astype("string").fillna("").to_markdown(index=False))
