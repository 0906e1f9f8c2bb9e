"""The hub database's tables and indexes (SQLAlchemy Core, same schema on SQLite and PostgreSQL).

Times are UTC seconds since the epoch (floats); JSON documents are stored as text so both
engines keep them byte for byte. The indexes are shaped for the lease query: queued jobs by
(priority, user, submit time) and by device, so picking the next job never scans the queue.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Table,
)

SCHEMA_VERSION = 2  # 2: hub_table_log (hubs on one database share their latency tables)

metadata = MetaData()

meta = Table(
    "hub_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tokens = Table(
    "hub_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("user", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("devices", Text),  # JSON list of names, NULL: any device
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Index("ix_hub_tokens_user", "user"),
)

agents = Table(
    "hub_agents",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("user", String(200), nullable=False),
    Column("hub_id", String(200), nullable=False),
    Column("online", Integer, nullable=False, default=1),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

devices = Table(
    "hub_devices",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("agent_id", String(200)),
    Column("hub_id", String(200)),
    Column("facts", Text, nullable=False, default="{}"),
    Column("online", Integer, nullable=False, default=0),
    Column("busy_job", String(32)),
    Column("fail_streak", Integer, nullable=False, default=0),
    Column("quarantined", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Index("ix_hub_devices_hub", "hub_id", "online"),
    Index("ix_hub_devices_agent", "agent_id"),
)

jobs = Table(
    "hub_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("device", String(200), nullable=False),
    Column("config", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False),
    Column("done", Integer, nullable=False, default=0),
    Column("total", Integer, nullable=False, default=0),
    Column("message", Text, nullable=False, default=""),
    Column("error", Text),
    Column("result", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("updated_at", Float, nullable=False),
    Column("version", Integer, nullable=False, default=0),
    # The agent and hub that ran it last (kept after the lease ends: who ran what).
    Column("agent_id", String(200)),
    Column("hub_id", String(200)),
    Column("leased_at", Float),
    # The live lease (NULL unless state is running).
    Column("lease_id", String(32), unique=True),
    Column("lease_agent", String(200)),
    Column("lease_ttl", Float),
    Column("lease_expires", Float),
    Index("ix_hub_jobs_queue", "state", "priority", "user", "created_at"),
    Index("ix_hub_jobs_device", "state", "device", "user", "priority", "created_at"),
    Index("ix_hub_jobs_expiry", "state", "lease_expires"),
    Index("ix_hub_jobs_agent", "lease_agent"),
    Index("ix_hub_jobs_user", "user", "created_at"),
    Index("ix_hub_jobs_created", "created_at"),
)

# Running jobs per user, for fair share: a small index (running jobs only).
Index(
    "ix_hub_jobs_running_user",
    jobs.c.user,
    jobs.c.state,
    sqlite_where=jobs.c.state == "running",
    postgresql_where=jobs.c.state == "running",
)

# A device runs one job at a time: enforced by the database, not only by the lease code.
Index(
    "ux_hub_jobs_running_device",
    jobs.c.device,
    unique=True,
    sqlite_where=jobs.c.state == "running",
    postgresql_where=jobs.c.state == "running",
)

# The latency tables that hubs on one database share: an append-only log of row changes (each
# hub keeps its own SQLite tables and takes in the others' entries; see edgelat.hub.shared_tables).
table_log = Table(
    "hub_table_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("origin", String(64), nullable=False),  # the replica (a hub's tables) that wrote it
    Column("tbl", String(200), nullable=False),
    Column("key", Text, nullable=False),  # JSON: the row's key in that table
    Column("row", Text),  # JSON: the row's content; NULL: the row was deleted
    Column("at", Float, nullable=False),
    # compaction finds the earlier entries of a row (edgelat.hub.table_log.compact)
    Index("ix_hub_table_log_key", "tbl", "key", "id"),
)
