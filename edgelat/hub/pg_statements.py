"""PostgreSQL's own statements for the queue's hot path: each is one round trip, atomic by itself.

Over a network every statement costs a round trip and the driver's work, and a transaction two
more (BEGIN, COMMIT); SQLite runs in-process and pays neither. So on PostgreSQL the steps of a
job that write are single statements (data-modifying CTEs) run without an explicit transaction,
and leasing reads each user's next job in one statement instead of one per user.

Every statement re-checks what it relies on (a job still queued, a device still free and served
by this hub, a lease still live), so running it on its own changes nothing a transaction would
have guaranteed: under READ COMMITTED each statement sees its own snapshot anyway.
"""

from __future__ import annotations

from sqlalchemy import text

from edgelat.hub.statements import TOP_USERS_FAIR

# A device that may take a job now, looked up by its primary key for each job considered. As a scalar
# subquery it cannot become a join, so no plan scans every device of the hub for each queued job
# (which a generic plan chose on a young database, whose statistics say the tables are empty).
_FREE = ('(SELECT d.hub_id = :p_hub AND d.online = 1 AND d.busy_job IS NULL AND d.quarantined = 0'
         ' AND d.last_seen >= :p_cutoff FROM hub_devices d WHERE d.name = j.device)')

#: The highest priority below :p_below with queued jobs; each user with queued jobs at it, with its
#: running jobs and (id NULL: none) its oldest job there on a free device of this hub.
PICK = text(
    f'WITH top AS ({TOP_USERS_FAIR.text})'
    ' SELECT top.priority, top.name, top.running, h.id, h.device, h.created_at FROM top'
    ' LEFT JOIN LATERAL (SELECT j.id, j.device, j.created_at FROM hub_jobs j'
    '  WHERE j.state = \'queued\' AND j.priority = top.priority AND j."user" = top.name'
    f'  AND {_FREE}'
    '  ORDER BY j.priority, j."user", j.created_at LIMIT 1) h ON true'
)

# The end of a lease, after a CTE ``pick`` that holds the chosen queued job's id (locked): take the
# device only with the job, then start the job; the job's row, or nothing.
_TAKE = (
    ' dev AS (UPDATE hub_devices SET busy_job = pick.id FROM pick'
    '  WHERE name = :p_device AND hub_id = :p_hub AND online = 1 AND busy_job IS NULL AND quarantined = 0'
    '  AND last_seen >= :p_cutoff RETURNING agent_id),'
    ' job AS (UPDATE hub_jobs SET state = \'running\', lease_id = :p_lease, lease_agent = dev.agent_id,'
    '  lease_ttl = :p_ttl, lease_expires = :p_expires, started_at = COALESCE(hub_jobs.started_at, :p_now),'
    '  leased_at = :p_now, agent_id = dev.agent_id, hub_id = :p_hub, updated_at = :p_now,'
    '  version = hub_jobs.version + 1'
    '  FROM dev WHERE hub_jobs.id = (SELECT id FROM pick) AND hub_jobs.state = \'queued\' RETURNING hub_jobs.*)'
    ' SELECT * FROM job'
)

#: Lease one device's next job in one statement: each user's next queued job for the device (priority,
#: then submit time); of those the first by priority, then fair share (the user's running jobs, then
#: ``:p_recent``, a JSON object of each user's recent leases through this hub, then submit time);
#: claimed as :data:`CLAIM` claims (the job locked while still queued, the
#: device taken only with it). The job's row, or nothing (no job waits, or it was taken meanwhile).
LEASE_DEVICE = text(
    'WITH head AS (SELECT h.id FROM (SELECT DISTINCT ON (j."user") j.id, j."user", j.priority, j.created_at'
    '  FROM hub_jobs j WHERE j.state = \'queued\' AND j.device = :p_device'
    '  ORDER BY j."user", j.priority DESC, j.created_at) h'
    ' ORDER BY h.priority DESC,'
    '  (SELECT count(*) FROM hub_jobs r WHERE r.state = \'running\' AND r."user" = h."user"),'
    '  COALESCE(CAST(CAST(:p_recent AS JSON) ->> h."user" AS DOUBLE PRECISION), 0), h.created_at LIMIT 1),'
    ' pick AS (SELECT j.id FROM hub_jobs j WHERE j.id = (SELECT id FROM head) AND j.state = \'queued\''
    '  FOR UPDATE OF j SKIP LOCKED),'
    + _TAKE
)

#: Queue a job and, with ``:p_take``, lease it at once when its device is free through this hub and no
#: other job waits for it (as :data:`CLAIM` would: the device taken only with the job, which then
#: starts as running). Returns the device as it was before (``device``, JSON; null: never seen) and
#: the job's row (``job``, JSON).
SUBMIT = text(
    'WITH dev AS (UPDATE hub_devices SET busy_job = :id WHERE name = :device AND CAST(:p_take AS BOOLEAN)'
    ' AND hub_id = :p_hub AND online = 1 AND busy_job IS NULL AND quarantined = 0 AND last_seen >= :p_cutoff'
    ' AND NOT EXISTS (SELECT 1 FROM hub_jobs q WHERE q.state = \'queued\' AND q.device = :device)'
    ' RETURNING agent_id, true AS taken),'
    ' job AS (INSERT INTO hub_jobs (id, "user", kind, device, config, params, priority, state, done, total,'
    ' message, attempts, created_at, updated_at, version, lease_id, lease_agent, lease_ttl, lease_expires,'
    ' started_at, leased_at, agent_id, hub_id)'
    ' SELECT :id, :user, :kind, :device, :config, :params, :priority,'
    ' CASE WHEN dev.taken IS NULL THEN :state ELSE \'running\' END, :done, :total, :message, :attempts,'
    ' :created_at, :updated_at, :version + CASE WHEN dev.taken IS NULL THEN 0 ELSE 1 END,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_lease AS TEXT) END, dev.agent_id,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_ttl AS DOUBLE PRECISION) END,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_expires AS DOUBLE PRECISION) END,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_now AS DOUBLE PRECISION) END,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_now AS DOUBLE PRECISION) END, dev.agent_id,'
    ' CASE WHEN dev.taken IS NULL THEN NULL ELSE CAST(:p_hub AS TEXT) END'
    ' FROM (SELECT 1) AS one LEFT JOIN dev ON true RETURNING *)'
    ' SELECT (SELECT row_to_json(d) FROM hub_devices d WHERE d.name = :device) AS device,'
    ' (SELECT row_to_json(job) FROM job) AS job'
)

#: End a running job and free its device (its failure streak cleared when it is done); returns the
#: device and whether jobs wait for it, or nothing when the lease was gone.
FINISH = text(
    'WITH job AS (UPDATE hub_jobs SET state = :p_state, error = :p_error, result = :p_result,'
    ' finished_at = :p_now, updated_at = :p_now, version = version + 1,'
    ' done = COALESCE(CAST(:p_done AS INTEGER), done), total = COALESCE(CAST(:p_total AS INTEGER), total),'
    ' lease_id = NULL, lease_agent = NULL, lease_expires = NULL'
    ' WHERE id = (SELECT l.id FROM hub_jobs l WHERE l.lease_id = :p_lease) AND state = \'running\''
    ' RETURNING id, device),'
    ' dev AS (UPDATE hub_devices SET busy_job = NULL,'
    ' fail_streak = CASE WHEN :p_state = \'done\' THEN 0 ELSE fail_streak END,'
    ' last_error = CASE WHEN :p_state = \'done\' THEN NULL ELSE last_error END'
    ' FROM job WHERE hub_devices.name = job.device AND hub_devices.busy_job = job.id)'
    ' SELECT job.device, EXISTS (SELECT 1 FROM hub_jobs q WHERE q.state = \'queued\' AND q.device = job.device)'
    ' AS waiting FROM job'
)

#: An agent is alive: its agent row and the devices it serves through this hub seen, this hub's
#: leases through it renewed (how many).
HEARTBEAT = text(
    'WITH a AS (UPDATE hub_agents SET last_seen = :p_now WHERE id = :p_agent),'
    ' d AS (UPDATE hub_devices SET last_seen = :p_now WHERE agent_id = :p_agent AND hub_id = :p_hub AND online = 1)'
    ' UPDATE hub_jobs SET lease_expires = :p_now + lease_ttl'
    ' WHERE lease_agent = :p_agent AND hub_id = :p_hub AND state = \'running\''
)

#: Several agents are alive (:data:`HEARTBEAT` for each of ``:p_agents``, a list), in one statement.
HEARTBEAT_MANY = text(
    'WITH a AS (UPDATE hub_agents SET last_seen = :p_now WHERE id = ANY(CAST(:p_agents AS TEXT[]))),'
    ' d AS (UPDATE hub_devices SET last_seen = :p_now WHERE agent_id = ANY(CAST(:p_agents AS TEXT[]))'
    ' AND hub_id = :p_hub AND online = 1)'
    ' UPDATE hub_jobs SET lease_expires = :p_now + lease_ttl'
    ' WHERE lease_agent = ANY(CAST(:p_agents AS TEXT[])) AND hub_id = :p_hub AND state = \'running\''
)

#: Lease a picked job: lock it (skipped when another lease holds it), then take its device only if
#: the job was still queued, then start the job; its row, or nothing when the job or the device was
#: taken meanwhile. Nothing changes unless both are taken (a lone statement commits what it did).
CLAIM = text(
    'WITH pick AS (SELECT id FROM hub_jobs WHERE id = :p_id AND state = \'queued\' FOR UPDATE SKIP LOCKED),'
    + _TAKE
)

#: What the hub runs on its plain connections (:mod:`edgelat.hub.raw_pg`).
HOT = (PICK, LEASE_DEVICE, SUBMIT, FINISH, HEARTBEAT, HEARTBEAT_MANY, CLAIM)
