//! Both backends' schemas: the migrations in order, step for step (migration N is the same
//! change on SQLite and on PostgreSQL), and the version this binary writes.
//! [`super::sqlite`] and [`super::postgres`] apply them when they open a database.

/// SQLite's migrations; version N means the first N have been applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE agents (
        id                TEXT PRIMARY KEY NOT NULL,
        incarnation       INTEGER,
        presence          TEXT NOT NULL DEFAULT 'unknown',
        last_heartbeat_ms INTEGER,
        last_seq_acked    INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE clusters (
        name   TEXT PRIMARY KEY NOT NULL,
        mode   TEXT NOT NULL CHECK (mode IN ('round-robin', 'fixed-priority')),
        cursor INTEGER NOT NULL DEFAULT 0
    );
    -- Members need not be known agents yet: a cluster may be configured before its boards
    -- first connect.
    CREATE TABLE cluster_members (
        cluster  TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        agent_id TEXT NOT NULL,
        PRIMARY KEY (cluster, position),
        UNIQUE (cluster, agent_id)
    );
    CREATE TABLE profiles (
        name                 TEXT PRIMARY KEY NOT NULL,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  INTEGER NOT NULL,
        heartbeat_timeout_ms INTEGER NOT NULL,
        grace_ms             INTEGER NOT NULL,
        max_run_ms           INTEGER NOT NULL,
        output_cap           INTEGER NOT NULL,
        retries              INTEGER NOT NULL,
        lost_after_ms        INTEGER
    );
    CREATE TABLE tasks (
        id                   INTEGER PRIMARY KEY AUTOINCREMENT,
        target_kind          TEXT NOT NULL CHECK (target_kind IN ('agent', 'cluster')),
        target               TEXT NOT NULL,
        argv                 TEXT NOT NULL CHECK (json_valid(argv)),
        env                  TEXT NOT NULL CHECK (json_valid(env)),
        cwd                  TEXT NOT NULL,
        profile              TEXT,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  INTEGER NOT NULL,
        heartbeat_timeout_ms INTEGER NOT NULL,
        grace_ms             INTEGER NOT NULL,
        max_run_ms           INTEGER NOT NULL,
        output_cap           INTEGER NOT NULL,
        retries              INTEGER NOT NULL,
        lost_after_ms        INTEGER,
        start_at_ms          INTEGER,
        state                TEXT NOT NULL,
        outcome              TEXT CHECK (outcome IS NULL OR json_valid(outcome)),
        created_ms           INTEGER NOT NULL,
        updated_ms           INTEGER NOT NULL
    );
    CREATE INDEX tasks_by_state ON tasks(state);
    CREATE TABLE attempts (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id        INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        agent_id       TEXT NOT NULL,
        state          TEXT NOT NULL,
        pid            INTEGER,
        exit           TEXT CHECK (exit IS NULL OR json_valid(exit)),
        kill_cause     TEXT CHECK (kill_cause IS NULL OR json_valid(kill_cause)),
        output_dropped INTEGER NOT NULL DEFAULT 0,
        created_ms     INTEGER NOT NULL,
        started_ms     INTEGER,
        finished_ms    INTEGER
    );
    CREATE INDEX attempts_by_task ON attempts(task_id);
    CREATE INDEX attempts_by_agent ON attempts(agent_id);
    -- No foreign key to attempts: an event is recorded even when it names an attempt this
    -- database does not know (it is evidence, not a reference).
    CREATE TABLE events (
        agent_id    TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        attempt     INTEGER,
        kind        TEXT NOT NULL,
        json        TEXT NOT NULL CHECK (json_valid(json)),
        received_ms INTEGER NOT NULL,
        UNIQUE (agent_id, seq)
    );
    CREATE INDEX events_by_attempt ON events(attempt);
    CREATE TABLE output (
        attempt_id INTEGER NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
        stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        offset     INTEGER NOT NULL,
        bytes      BLOB NOT NULL,
        PRIMARY KEY (attempt_id, stream, offset)
    );
    ",
    // 2: kill requests outlive a master restart (the agent may be unreachable for days).
    "
    CREATE TABLE kill_requests (
        task_id INTEGER PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE
    );
    ",
    // 3: authentication. The master's epoch only grows (agents refuse older epochs), and each
    // agent's MAC key.
    "
    CREATE TABLE master_epoch (
        id    INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    );
    INSERT INTO master_epoch (id, epoch) VALUES (1, 0);
    CREATE TABLE agent_keys (
        agent_id   TEXT PRIMARY KEY NOT NULL,
        key        BLOB NOT NULL CHECK (length(key) = 32),
        created_ms INTEGER NOT NULL
    );
    ",
    // 4: who may use the API (token hashes, never the tokens) and what they changed.
    "
    CREATE TABLE api_tokens (
        name       TEXT PRIMARY KEY NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        hash       TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        revoked_ms INTEGER
    );
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms   INTEGER NOT NULL,
        who     TEXT NOT NULL,
        action  TEXT NOT NULL,
        subject TEXT NOT NULL
    );
    CREATE INDEX audit_by_subject ON audit (subject, id);
    ",
    // 5: switch-over. A disabled agent gets no new work; it may be disabled before it ever
    // connected (a row with the defaults).
    "
    ALTER TABLE agents ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
    ",
    // 6: journal identities. The agent names its journal; the master numbers the agent's
    // events in one sequence across journals, from `seq_base` for the current one.
    "
    ALTER TABLE agents ADD COLUMN journal INTEGER CHECK (journal BETWEEN 1 AND 4294967295);
    ALTER TABLE agents ADD COLUMN seq_base INTEGER NOT NULL DEFAULT 0 CHECK (seq_base >= 0);
    ",
    // 7: workflows and orders. A workflow version is immutable (its steps as JSON, policies
    // resolved); an order runs one version, its steps as tasks naming it (`order_id`,
    // `order_step`); a chained step's attempt names the attempt it waits for on its agent.
    "
    CREATE TABLE workflows (
        name       TEXT NOT NULL,
        version    INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        steps      TEXT NOT NULL CHECK (json_valid(steps)),
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE orders (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow   TEXT NOT NULL,
        version    INTEGER NOT NULL,
        state      TEXT NOT NULL
                   CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
        reason     TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        FOREIGN KEY (workflow, version) REFERENCES workflows (name, version)
    );
    CREATE INDEX orders_by_state ON orders (state);
    ALTER TABLE tasks ADD COLUMN order_id INTEGER REFERENCES orders (id);
    ALTER TABLE tasks ADD COLUMN order_step INTEGER CHECK (order_step BETWEEN 0 AND 4294967295);
    CREATE INDEX tasks_by_order ON tasks (order_id);
    ALTER TABLE attempts ADD COLUMN after_attempt INTEGER;
    ",
    // 8: schedules. A schedule's row is its latest version (calendar and task as JSON); one
    // live (not deleted) schedule per name. A hand-over is a run of a schedule's occurrences
    // given to an agent, keyed by the task id it reserves from (its ids are reserved in
    // `sqlite_sequence` as it is stored). An occurrence's task names its schedule, version and
    // time, all or none; `last_occurrence_ms` keeps the latest occurrence a task was stored
    // for, pruned tasks included.
    "
    CREATE TABLE schedules (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        name               TEXT NOT NULL,
        version            INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        calendar           TEXT NOT NULL CHECK (json_valid(calendar)),
        task               TEXT NOT NULL CHECK (json_valid(task)),
        missed             TEXT NOT NULL CHECK (missed IN ('skip', 'once', 'all')),
        late_ms            INTEGER NOT NULL CHECK (late_ms >= 0),
        paused             INTEGER NOT NULL CHECK (paused IN (0, 1)),
        deleted            INTEGER NOT NULL CHECK (deleted IN (0, 1)),
        created_ms         INTEGER NOT NULL,
        updated_ms         INTEGER NOT NULL,
        last_occurrence_ms INTEGER CHECK (last_occurrence_ms >= 0)
    );
    CREATE UNIQUE INDEX schedules_live_name ON schedules (name) WHERE deleted = 0;
    CREATE TABLE handovers (
        task        INTEGER PRIMARY KEY NOT NULL,
        attempt     INTEGER NOT NULL,
        schedule_id INTEGER NOT NULL REFERENCES schedules (id),
        version     INTEGER NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        agent_id    TEXT NOT NULL,
        runs        TEXT NOT NULL CHECK (json_valid(runs)),
        state       TEXT NOT NULL CHECK (state IN ('sent', 'held', 'ended')),
        created_ms  INTEGER NOT NULL,
        updated_ms  INTEGER NOT NULL
    );
    CREATE INDEX handovers_by_schedule ON handovers (schedule_id);
    CREATE INDEX handovers_by_state ON handovers (state);
    ALTER TABLE tasks ADD COLUMN occurrence_schedule INTEGER REFERENCES schedules (id);
    ALTER TABLE tasks ADD COLUMN occurrence_version INTEGER
        CHECK (occurrence_version BETWEEN 1 AND 4294967295);
    ALTER TABLE tasks ADD COLUMN occurrence_at_ms INTEGER CHECK (occurrence_at_ms >= 0
        AND (occurrence_schedule IS NULL) = (occurrence_at_ms IS NULL)
        AND (occurrence_version IS NULL) = (occurrence_at_ms IS NULL));
    -- Every occurrence runs once: the store itself refuses a second task for one occurrence
    -- (the core never makes one; this holds whatever it does).
    CREATE UNIQUE INDEX tasks_by_occurrence ON tasks (occurrence_schedule, occurrence_at_ms)
        WHERE occurrence_schedule IS NOT NULL;
    ",
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// PostgreSQL's migrations, one per SQLite migration. Integers are BIGINT (the model's are
/// unsigned: the store checks them both ways); ids come from the core, and `id_marks` keeps
/// the highest ever stored so ids of pruned rows are not issued again (SQLite's
/// `sqlite_sequence`).
pub const PG_MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE agents (
        id                TEXT PRIMARY KEY NOT NULL,
        incarnation       BIGINT,
        presence          TEXT NOT NULL DEFAULT 'unknown',
        last_heartbeat_ms BIGINT,
        last_seq_acked    BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE clusters (
        name   TEXT PRIMARY KEY NOT NULL,
        mode   TEXT NOT NULL CHECK (mode IN ('round-robin', 'fixed-priority')),
        cursor BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE cluster_members (
        cluster  TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
        position BIGINT NOT NULL,
        agent_id TEXT NOT NULL,
        PRIMARY KEY (cluster, position),
        UNIQUE (cluster, agent_id)
    );
    CREATE TABLE profiles (
        name                 TEXT PRIMARY KEY NOT NULL,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  BIGINT NOT NULL,
        heartbeat_timeout_ms BIGINT NOT NULL,
        grace_ms             BIGINT NOT NULL,
        max_run_ms           BIGINT NOT NULL,
        output_cap           BIGINT NOT NULL,
        retries              BIGINT NOT NULL,
        lost_after_ms        BIGINT
    );
    CREATE TABLE tasks (
        id                   BIGINT PRIMARY KEY,
        target_kind          TEXT NOT NULL CHECK (target_kind IN ('agent', 'cluster')),
        target               TEXT NOT NULL,
        argv                 TEXT NOT NULL,
        env                  TEXT NOT NULL,
        cwd                  TEXT NOT NULL,
        profile              TEXT,
        on_disconnect        TEXT NOT NULL CHECK (on_disconnect IN ('kill', 'continue')),
        heartbeat_period_ms  BIGINT NOT NULL,
        heartbeat_timeout_ms BIGINT NOT NULL,
        grace_ms             BIGINT NOT NULL,
        max_run_ms           BIGINT NOT NULL,
        output_cap           BIGINT NOT NULL,
        retries              BIGINT NOT NULL,
        lost_after_ms        BIGINT,
        start_at_ms          BIGINT,
        state                TEXT NOT NULL,
        outcome              TEXT,
        created_ms           BIGINT NOT NULL,
        updated_ms           BIGINT NOT NULL
    );
    CREATE INDEX tasks_by_state ON tasks(state);
    CREATE TABLE attempts (
        id             BIGINT PRIMARY KEY,
        task_id        BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        agent_id       TEXT NOT NULL,
        state          TEXT NOT NULL,
        pid            BIGINT,
        exit           TEXT,
        kill_cause     TEXT,
        output_dropped BIGINT NOT NULL DEFAULT 0,
        created_ms     BIGINT NOT NULL,
        started_ms     BIGINT,
        finished_ms    BIGINT
    );
    CREATE INDEX attempts_by_task ON attempts(task_id);
    CREATE INDEX attempts_by_agent ON attempts(agent_id);
    CREATE TABLE events (
        agent_id    TEXT NOT NULL,
        seq         BIGINT NOT NULL,
        attempt     BIGINT,
        kind        TEXT NOT NULL,
        json        TEXT NOT NULL,
        received_ms BIGINT NOT NULL,
        UNIQUE (agent_id, seq)
    );
    CREATE INDEX events_by_attempt ON events(attempt);
    CREATE TABLE output (
        attempt_id BIGINT NOT NULL REFERENCES attempts(id) ON DELETE CASCADE,
        stream     TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr')),
        "offset"   BIGINT NOT NULL,
        bytes      BYTEA NOT NULL,
        PRIMARY KEY (attempt_id, stream, "offset")
    );
    CREATE TABLE id_marks (
        name TEXT PRIMARY KEY NOT NULL,
        id   BIGINT NOT NULL
    );
    INSERT INTO id_marks (name, id) VALUES ('tasks', 0), ('attempts', 0);
    "#,
    // 2: kill requests outlive a master restart.
    "
    CREATE TABLE kill_requests (
        task_id BIGINT PRIMARY KEY NOT NULL REFERENCES tasks(id) ON DELETE CASCADE
    );
    ",
    // 3: authentication: the epoch row and each agent's MAC key.
    "
    CREATE TABLE master_epoch (
        id    BIGINT PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    );
    INSERT INTO master_epoch (id, epoch) VALUES (1, 0);
    CREATE TABLE agent_keys (
        agent_id   TEXT PRIMARY KEY NOT NULL,
        key        BYTEA NOT NULL CHECK (length(key) = 32),
        created_ms BIGINT NOT NULL
    );
    ",
    // 4: API tokens and the audit trail (its ids from a sequence: never reused).
    "
    CREATE TABLE api_tokens (
        name       TEXT PRIMARY KEY NOT NULL,
        role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
        hash       TEXT NOT NULL UNIQUE,
        created_ms BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        revoked_ms BIGINT
    );
    CREATE TABLE audit (
        id      BIGSERIAL PRIMARY KEY,
        at_ms   BIGINT NOT NULL,
        who     TEXT NOT NULL,
        action  TEXT NOT NULL,
        subject TEXT NOT NULL
    );
    CREATE INDEX audit_by_subject ON audit (subject, id);
    ",
    // 5: switch-over: a disabled agent gets no new work.
    "
    ALTER TABLE agents ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1));
    ",
    // 6: journal identities.
    "
    ALTER TABLE agents ADD COLUMN journal BIGINT CHECK (journal BETWEEN 1 AND 4294967295);
    ALTER TABLE agents ADD COLUMN seq_base BIGINT NOT NULL DEFAULT 0 CHECK (seq_base >= 0);
    ",
    // 7: workflows and orders (order ids kept in `id_marks` as task and attempt ids are).
    "
    CREATE TABLE workflows (
        name       TEXT NOT NULL,
        version    BIGINT NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        steps      TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE orders (
        id         BIGINT PRIMARY KEY,
        workflow   TEXT NOT NULL,
        version    BIGINT NOT NULL,
        state      TEXT NOT NULL
                   CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled')),
        reason     TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        FOREIGN KEY (workflow, version) REFERENCES workflows (name, version)
    );
    CREATE INDEX orders_by_state ON orders (state);
    ALTER TABLE tasks ADD COLUMN order_id BIGINT REFERENCES orders (id);
    ALTER TABLE tasks ADD COLUMN order_step BIGINT CHECK (order_step BETWEEN 0 AND 4294967295);
    CREATE INDEX tasks_by_order ON tasks (order_id);
    ALTER TABLE attempts ADD COLUMN after_attempt BIGINT;
    INSERT INTO id_marks (name, id) VALUES ('orders', 0);
    ",
    // 8: schedules, hand-overs (their reserved ids kept in `id_marks` as they are stored) and
    // occurrence tasks (schedule ids kept in `id_marks` too).
    "
    CREATE TABLE schedules (
        id                 BIGINT PRIMARY KEY,
        name               TEXT NOT NULL,
        version            BIGINT NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        calendar           TEXT NOT NULL,
        task               TEXT NOT NULL,
        missed             TEXT NOT NULL CHECK (missed IN ('skip', 'once', 'all')),
        late_ms            BIGINT NOT NULL CHECK (late_ms >= 0),
        paused             BIGINT NOT NULL CHECK (paused IN (0, 1)),
        deleted            BIGINT NOT NULL CHECK (deleted IN (0, 1)),
        created_ms         BIGINT NOT NULL,
        updated_ms         BIGINT NOT NULL,
        last_occurrence_ms BIGINT CHECK (last_occurrence_ms >= 0)
    );
    CREATE UNIQUE INDEX schedules_live_name ON schedules (name) WHERE deleted = 0;
    CREATE TABLE handovers (
        task        BIGINT PRIMARY KEY,
        attempt     BIGINT NOT NULL,
        schedule_id BIGINT NOT NULL REFERENCES schedules (id),
        version     BIGINT NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
        agent_id    TEXT NOT NULL,
        runs        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('sent', 'held', 'ended')),
        created_ms  BIGINT NOT NULL,
        updated_ms  BIGINT NOT NULL
    );
    CREATE INDEX handovers_by_schedule ON handovers (schedule_id);
    CREATE INDEX handovers_by_state ON handovers (state);
    ALTER TABLE tasks ADD COLUMN occurrence_schedule BIGINT REFERENCES schedules (id);
    ALTER TABLE tasks ADD COLUMN occurrence_version BIGINT
        CHECK (occurrence_version BETWEEN 1 AND 4294967295);
    ALTER TABLE tasks ADD COLUMN occurrence_at_ms BIGINT CHECK (occurrence_at_ms >= 0);
    ALTER TABLE tasks ADD CONSTRAINT tasks_occurrence_whole CHECK
        (num_nulls(occurrence_schedule, occurrence_version, occurrence_at_ms) IN (0, 3));
    -- Every occurrence runs once, enforced by the store too.
    CREATE UNIQUE INDEX tasks_by_occurrence ON tasks (occurrence_schedule, occurrence_at_ms)
        WHERE occurrence_schedule IS NOT NULL;
    INSERT INTO id_marks (name, id) VALUES ('schedules', 0);
    ",
];

const _: () = assert!(MIGRATIONS.len() == PG_MIGRATIONS.len());
