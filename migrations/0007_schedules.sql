-- Cron schedules and the scheduler processes that fire them.
--
-- A schedule's `fired_through` is its cursor: every tick at or before it has been handled
-- (fired, or passed over because no scheduler was running then). The leader advances it
-- with a compare-and-set in the same transaction that enqueues the tick's job, so a tick
-- is fired at most once whoever leads; the job's idempotency key `schedule:NAME:TICK`
-- is a second, independent guard.

CREATE TABLE kiln_schedules (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    job           jsonb NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    catch_up      boolean NOT NULL DEFAULT false,
    source        text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config')),
    fired_through timestamptz NOT NULL DEFAULT now(),
    last_fired_at timestamptz,
    last_job_id   bigint,
    fired_count   bigint NOT NULL DEFAULT 0,
    missed_count  bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Every `kiln scheduler` process, leader or follower, with its heartbeat. A tick is
-- "missed while no scheduler ran" when no row's [started_at, last_seen_at + slack]
-- covers it; rows of stopped schedulers are kept a day for that reason.
CREATE TABLE kiln_schedulers (
    id            text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    leading_since timestamptz
);
CREATE INDEX kiln_schedulers_seen ON kiln_schedulers (last_seen_at);
