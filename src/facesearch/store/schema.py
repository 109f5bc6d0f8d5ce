"""Tables of the metadata store. Portable SQLAlchemy Core: SQLite embedded, PostgreSQL deployed."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("lawful_basis", Text, nullable=False),
    Column("jurisdiction", String(7), nullable=False),  # ISO 3166-1 alpha-2 or "unknown"
    Column("description", Text, nullable=False, default=""),
    Column("created_at", String(32), nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("location", Text, nullable=False),  # a path or URL
    Column("page_url", Text),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False, index=True),
    Column("jurisdiction", String(7), nullable=False, index=True),
    Column("collected_at", String(32), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String(16), nullable=False),
    Column("withheld_faces", Integer, nullable=False, default=0),  # suppressed at ingest
)

faces = Table(
    "faces",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False,
           index=True),
    Column("face_index", Integer, nullable=False),  # position within its image, largest first
    Column("box_left", Integer, nullable=False),
    Column("box_top", Integer, nullable=False),
    Column("box_right", Integer, nullable=False),
    Column("box_bottom", Integer, nullable=False),
    Column("landmarks", Text, nullable=False),  # JSON [[x, y], ...], 5 points
    Column("detector_score", Float, nullable=False),
    Column("quality", Float, nullable=False),
    Column("crop_path", Text, nullable=False),  # relative to the crops directory
    Column("embedding", LargeBinary, nullable=False),  # float32 little-endian
    UniqueConstraint("image_id", "face_index"),
    # Face ids are never reused: the vector index and the erasure journal refer to them.
    sqlite_autoincrement=True,
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("embedding", LargeBinary, nullable=False),  # the person's template, not their photo
    Column("reason", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Faces deleted from the metadata whose vector and crop file may still exist: written in the
# same transaction as the deletion, cleared once index and disk are clean. A crash in between
# leaves work here, which the next start finishes, so a deletion can never be half done.
pending_erasures = Table(
    "pending_erasures",
    metadata,
    Column("face_id", Integer, primary_key=True, autoincrement=False),
    Column("crop_path", Text, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("detail", Text, nullable=False),  # JSON: counts, ids, hashes; never pixels
)
