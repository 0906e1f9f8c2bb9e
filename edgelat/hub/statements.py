"""The queue's hot statements, built once per store with bound parameters.

Building a SQLAlchemy statement costs more than SQLite takes to run it; leasing runs a dozen
of them, so they are compiled once (and cached by SQLAlchemy) instead of on every call.
Parameter names start with ``p_`` so they never clash with column names in SET clauses.
"""

from __future__ import annotations

from dataclasses import dataclass

import json
from typing import Any, Callable

from sqlalchemy import ARRAY, Integer, String, and_, any_, bindparam, func, literal_column, select, text, update
from sqlalchemy.sql import Executable

from edgelat.hub.schema import agents
from edgelat.hub.schema import devices as d
from edgelat.hub.schema import jobs as j

# The highest priority below :p_below that has queued jobs (an index seek).
_TOP = ('(SELECT priority FROM hub_jobs WHERE state = \'queued\' AND priority < :p_below'
        ' ORDER BY priority DESC LIMIT 1)')
PRIORITY_CEILING = 1001  # priorities are -1000..1000

# That priority, the distinct users with queued jobs at it -- by index seeks (a loose index scan),
# never by scanning the queue -- and each one's running jobs (from the small partial index of
# running jobs), the first key of fair share. One round trip for the ordering.
TOP_USERS_FAIR = text(
    'WITH RECURSIVE u(name) AS ('
    f' SELECT MIN("user") FROM hub_jobs WHERE state = \'queued\' AND priority = {_TOP}'
    ' UNION ALL'
    ' SELECT (SELECT MIN("user") FROM hub_jobs'
    f'  WHERE state = \'queued\' AND priority = {_TOP} AND "user" > u.name)'
    ' FROM u WHERE u.name IS NOT NULL'
    f') SELECT {_TOP} AS priority, u.name AS name,'
    ' (SELECT COUNT(*) FROM hub_jobs r WHERE r.state = \'running\' AND r."user" = u.name) AS running'
    ' FROM u WHERE u.name IS NOT NULL'
)


def free_device():
    """A device that can take a job now: online via this hub, seen lately, idle, not quarantined."""
    return and_(d.c.hub_id == bindparam("p_hub"), d.c.online == 1, d.c.busy_job.is_(None), d.c.quarantined == 0,
                d.c.last_seen >= bindparam("p_cutoff"))


@dataclass(frozen=True)
class Statements:
    """Prepared statements for one engine (PostgreSQL adds row locks; SQLite's write lock covers them)."""

    probe_any: Executable
    probe_devices: Executable
    other_queued: Executable
    device_row: Executable
    running_of: Executable
    head: Executable
    head_in: Executable
    free_names: Executable
    heads_few: Executable
    pick_few: Executable
    claim_device: Executable
    device_agent: Executable
    claim_job: Executable
    get_job: Executable
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
    #: a list of names as the ``p_names``/``p_users`` parameter takes it (an array, or JSON on SQLite)
    pack: Callable[[list[str]], Any]


def build(pg: bool, returning: bool) -> Statements:
    """The statements for PostgreSQL (``pg``) or SQLite; ``returning``: the engine has UPDATE ... RETURNING."""

    def skip_locked(stmt, *of):
        return stmt.with_for_update(skip_locked=True, of=list(of) or None) if pg else stmt

    def lock(stmt):
        return stmt.with_for_update() if pg else stmt

    def one_of(col, param: str):
        # one bound parameter for the whole list, not one per name: SQLAlchemy renders an expanding
        # IN anew on every call, which costs more than the query when an agent names its devices
        if pg:
            return col == any_(bindparam(param, type_=ARRAY(String)))
        return col.in_(select(literal_column("value")).select_from(func.json_each(bindparam(param))))

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
        done=func.coalesce(bindparam("p_done", type_=Integer), j.c.done),
        total=func.coalesce(bindparam("p_total", type_=Integer), j.c.total),
        lease_id=None, lease_agent=None, lease_expires=None))
    return Statements(
        probe_any=select(j.c.id).where(j.c.state == "queued").limit(1),
        probe_devices=select(j.c.id).where(j.c.state == "queued", one_of(j.c.device, "p_names")).limit(1),
        device_row=select(d).where(d.c.name == bindparam("p_device")),
        other_queued=select(j.c.id).where(j.c.state == "queued", j.c.device == bindparam("p_device"),
                                          j.c.id != bindparam("p_id")).limit(1),
        running_of=select(j.c.user, func.count()).where(
            j.c.state == "running", one_of(j.c.user, "p_users")).group_by(j.c.user),
        head=skip_locked(head, j),
        head_in=skip_locked(head.where(one_of(d.c.name, "p_names")), j),
        free_names=select(d.c.name).where(one_of(d.c.name, "p_names"), free_device()),
        heads_few=(select(j.c.user, j.c.priority, func.min(j.c.created_at))
                   .where(j.c.state == "queued", one_of(j.c.device, "p_names")).group_by(j.c.user, j.c.priority)),
        pick_few=skip_locked(select(j.c.id, j.c.device)
                             .where(j.c.state == "queued", one_of(j.c.device, "p_names"), j.c.user == bindparam("p_user"),
                                    j.c.priority == bindparam("p_priority"))
                             .order_by(j.c.created_at).limit(1)),
        claim_device=claim_device.returning(d.c.agent_id) if returning else claim_device,
        device_agent=select(d.c.agent_id).where(d.c.name == bindparam("p_device")),
        claim_job=claim_job.returning(*j.c) if returning else claim_job,
        get_job=select(j).where(j.c.id == bindparam("p_id")),
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
        seen_devices=update(d).where(d.c.agent_id == bindparam("p_agent"), d.c.hub_id == bindparam("p_hub"),
                                     d.c.online == 1).values(last_seen=bindparam("p_now")),
        renew_leases=update(j).where(j.c.lease_agent == bindparam("p_agent"), j.c.hub_id == bindparam("p_hub"),
                                     j.c.state == "running").values(lease_expires=bindparam("p_now") + j.c.lease_ttl),
        notify=text("SELECT pg_notify('edgelat_hub_work', :p_payload)"),
        returning=returning,
        pack=list if pg else (lambda names: json.dumps(list(names))),
    )
