"""Small helpers shared by the asset modules: table metadata and content data versions."""

import os

import dagster as dg
import polars as pl

from gamerec_assets.core.io import combined_sha256


def table_metadata(frame: pl.DataFrame) -> dict[str, object]:
    """Row count and column schema in the keys the Dagster UI shows for tables."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
        ),
    }


def content_version(*paths: str | os.PathLike) -> dg.DataVersion:
    """A data version derived from the bytes of the files an asset wrote."""
    return dg.DataVersion(combined_sha256(list(paths))[:16])


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Render a list of dicts (same keys) as a markdown table for metadata."""
    if not rows:
        return "(none)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)
