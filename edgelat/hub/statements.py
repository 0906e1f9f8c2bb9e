"""The queue's hot statements, built once per store with bound parameters.

Building a SQLAlchemy statement costs more than SQLite takes to run it; leasing runs a dozen
of them, so they are compiled once (and cached by SQLAlchemy) instead of on every call.
Parameter names start with ``p_`` so they never clash with column names in SET clauses.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, bindparam, func, literal, select, text, union_all, update
from sqlalchemy.sql import Executable

from edgelat.hub.schema import agents
from edgelat.hub.schema import devices as d
from edgelat.hub.schema import jobs as j
from edgelat.hub.schema import users as u

SHARE_HALF_LIFE_S = 60.0
"""Fair share forgets a user's past leases with this half-life ("leased recently")."""

# The highest priority below :p_below that has queued jobs, and the distinct users with queued jobs
# at it -- all by index seeks (a loose index scan), never by scanning the queue. One round trip.
_TOP = ('(SELECT priority FROM hub_jobs WHERE state = \'queued\' AND priority < :p_below'
        ' ORDER BY priority DESC LIMIT 1)')
TOP_USERS = text(
    'WITH RECURSIVE u(name) AS ('
    f' SELECT MIN("user") FROM hub_jobs WHERE state = \'queued\' AND priority = {_TOP}'
    ' UNION ALL'
    ' SELECT (SELECT MIN("user") FROM hub_jobs'
    f'  WHERE state = \'queued\' AND priority = {_TOP} AND "user" > u.name)'
    ' FROM u WHERE u.name IS NOT NULL'
    f') SELECT {_TOP} AS priority, name FROM u WHERE name IS NOT NULL'
)
PRIORITY_CEILING = 1001  # priorities are -1000..1000


def free_device():
    """A device that can take a job now: online via this hub, seen lately, idle, not quarantined."""
    return and_(d.c.hub_id == bindparam("p_hub"), d.c.online == 1, d.c.busy_job.is_(None), d.c.quarantined == 0,
                d.c.last_seen >= bindparam("p_cutoff"))


@dataclass(frozen=True)
class Statements:
    """Prepared statements for one engine (PostgreSQL adds row locks; SQLite's write lock covers them)."""

    probe_any: Executable
    probe_devices: Executable
    fair: Executable
    head: Executable
    head_in: Executable
    free_names: Executable
    heads_few: Executable
    pick_few: Executable
    claim_device: Executable
    device_agent: Executable
    claim_job: Executable
    get_job: Executable
    share: Executable
    set_share: Executable
    bump_share: Executable | None
    progress: Executable
    running_by_lease: Executable
    finish_job: Executable
    free_device_done: Executable
    free_device: Executable
    insert_job: Executable
    notify: Executable
    seen_agent: Executable
    seen_devices: Executable
    renew_leases: Executable
    returning: bool


def build(pg: bool, returning: bool, math: bool) -> Statements:
    """The statements for PostgreSQL (``pg``) or SQLite; ``returning``: the engine has UPDATE ... RETURNING;
    ``math``: it has power() (PostgreSQL always; SQLite when built with its math functions)."""

    def skip_locked(stmt, *of):
        return stmt.with_for_update(skip_locked=True, of=list(of) or None) if pg else stmt

    def lock(stmt):
        return stmt.with_for_update() if pg else stmt

    names = bindparam("p_names", expanding=True)
    head = (select(j.c.id, j.c.device, j.c.user, j.c.created_at)
            .join(d, d.c.name == j.c.device)
            .where(j.c.state == "queued", j.c.priority == bindparam("p_priority"), j.c.user == bindparam("p_user"),
                   free_device())
            .order_by(j.c.created_at).limit(1))
    claim_device = (update(d).where(d.c.name == bindparam("p_device"), free_device())
                    .values(busy_job=bindparam("p_id")))
    claim_job = (update(j).where(j.c.id == bindparam("p_id"), j.c.state == "queued").values(
        state="running", lease_id=bindparam("p_lease"), lease_agent=bindparam("p_agent"),
        lease_ttl=bindparam("p_ttl"), lease_expires=bindparam("p_expires"),
        started_at=func.coalesce(j.c.started_at, bindparam("p_now")), leased_at=bindparam("p_now"),
        agent_id=bindparam("p_agent"), hub_id=bindparam("p_hub"), updated_at=bindparam("p_now"),
        version=j.c.version + 1))
    finish_job = (update(j).where(j.c.lease_id == bindparam("p_lease"), j.c.state == "running").values(
        state=bindparam("p_state"), error=bindparam("p_error"), result=bindparam("p_result"),
        finished_at=bindparam("p_now"), updated_at=bindparam("p_now"), version=j.c.version + 1,
        lease_id=None, lease_agent=None, lease_expires=None))
    return Statements(
        probe_any=select(j.c.id).where(j.c.state == "queued").limit(1),
        probe_devices=select(j.c.id).where(j.c.state == "queued", j.c.device.in_(names)).limit(1),
        # Fair share inputs in one round trip: each user's decayed lease count, and running jobs per user.
        fair=union_all(
            select(u.c.name, u.c.share, u.c.share_at, literal(-1).label("running"))
            .where(u.c.name.in_(bindparam("p_users", expanding=True))),
            select(j.c.user, literal(0.0), literal(0.0), func.count())
            .where(j.c.state == "running").group_by(j.c.user)),
        head=skip_locked(head, j),
        head_in=skip_locked(head.where(d.c.name.in_(names)), j),
        free_names=select(d.c.name).where(d.c.name.in_(names), free_device()),
        heads_few=(select(j.c.user, j.c.priority, func.min(j.c.created_at))
                   .where(j.c.state == "queued", j.c.device.in_(names)).group_by(j.c.user, j.c.priority)),
        pick_few=skip_locked(select(j.c.id, j.c.device)
                             .where(j.c.state == "queued", j.c.device.in_(names), j.c.user == bindparam("p_user"),
                                    j.c.priority == bindparam("p_priority"))
                             .order_by(j.c.created_at).limit(1)),
        claim_device=claim_device.returning(d.c.agent_id) if returning else claim_device,
        device_agent=select(d.c.agent_id).where(d.c.name == bindparam("p_device")),
        claim_job=claim_job.returning(*j.c) if returning else claim_job,
        get_job=select(j).where(j.c.id == bindparam("p_id")),
        share=lock(select(u.c.share, u.c.share_at).where(u.c.name == bindparam("p_user"))),
        set_share=update(u).where(u.c.name == bindparam("p_user")).values(
            share=bindparam("p_share"), share_at=bindparam("p_now")),
        # Decay and count in one statement where the engine has power().
        bump_share=update(u).where(u.c.name == bindparam("p_user")).values(
            share=u.c.share * func.power(0.5, (func.greatest if pg else func.max)(
                0.0, bindparam("p_now") - u.c.share_at) / SHARE_HALF_LIFE_S) + 1.0,
            share_at=bindparam("p_now")) if math else None,
        progress=update(j).where(j.c.lease_id == bindparam("p_lease"), j.c.state == "running").values(
            done=bindparam("p_done"), total=bindparam("p_total"), message=bindparam("p_message"),
            updated_at=bindparam("p_now"), version=j.c.version + 1,
            lease_expires=bindparam("p_now") + j.c.lease_ttl),
        running_by_lease=lock(select(j.c.id, j.c.device)
                              .where(j.c.lease_id == bindparam("p_lease"), j.c.state == "running")),
        finish_job=finish_job.returning(j.c.id, j.c.device) if returning else finish_job,
        free_device_done=(update(d).where(d.c.name == bindparam("p_device"), d.c.busy_job == bindparam("p_id"))
                          .values(busy_job=None, fail_streak=0, last_error=None)),
        free_device=(update(d).where(d.c.name == bindparam("p_device"), d.c.busy_job == bindparam("p_id"))
                     .values(busy_job=None)),
        insert_job=j.insert(),
        seen_agent=update(agents).where(agents.c.id == bindparam("p_agent")).values(last_seen=bindparam("p_now")),
        seen_devices=update(d).where(d.c.agent_id == bindparam("p_agent"), d.c.online == 1)
        .values(last_seen=bindparam("p_now")),
        renew_leases=update(j).where(j.c.lease_agent == bindparam("p_agent"), j.c.state == "running")
        .values(lease_expires=bindparam("p_now") + j.c.lease_ttl),
        notify=text("SELECT pg_notify('edgelat_hub_work', :p_payload)"),
        returning=returning,
    )
