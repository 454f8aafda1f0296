// The queue capability: durable jobs with the rules of `JobQueueLedger`, one server-side call per operation.

extension PostgresSchema {
    /// How far a reader that applies no claim or renewal (enqueue, record, release, cancel, redrive, prune, stats)
    /// extrapolates a queue's store clock by the wall clock past its last advance (µs): a forward step of the
    /// server's clock moves what such a reader sees by at most this much.
    static let queueReadAheadMicroseconds: Int64 = 1_000_000

    /// The longest span between two claims or renewals of one client that counts as its measurement of time (µs),
    /// unless the claim lease is longer: an idle worker polls less often than a group member heartbeats, and without
    /// evidence the clock moves by the slack only. Over 5 minutes a client's clock (within 0.1 %) errs by 0.3 s at
    /// most, far less than a claim's fencing margin.
    static let queueEvidenceWindowMicroseconds: Int64 = 300_000_000

    /// The notification channel on which enqueues, releases and redrives are announced, with the queue name as
    /// payload. Distinct from the groups' channel (``channel(schema:)`` always starts `understudy_`), so neither
    /// wakes the other's subscribers.
    static func queueChannel(schema: String) -> String {
        channel(prefix: "understudyq_", schema: schema)
    }

    /// The queue tables, created once. Additive (older clients ignore them), so no new schema version: a rolling
    /// upgrade keeps working.
    ///
    /// - `jobs`: one row per job until `prune` deletes it. `stage` is `available` (claimable from `since`),
    ///   `running` (claimed since `since` until `expires_at`), or `done` / `dead` / `cancelled` (at `since`). Rows
    ///   change state often and are deleted in bulk, so the table leaves room for updates on each page and is
    ///   vacuumed after 1 % of it changed; claims read only the small partial indexes of available and running rows.
    /// - `queue_clocks`: each queue's store clock, on which its claims are judged (see ``queueFunctions(schema:)``).
    /// - `queue_clients`: per queue and client handle (a random incarnation per `PostgresStore`), the store time
    ///   of its previous claim or renewal and when it sent it on its own monotonic clock: the evidence that bounds
    ///   how far the clock may advance.
    static func queueTables(schema s: String) -> String {
        """
            IF to_regclass('"\(s)".jobs') IS NULL THEN
                CREATE TABLE "\(s)".queue_clocks (
                    queue text PRIMARY KEY,
                    store_now bigint NOT NULL,
                    wall_at bigint NOT NULL,
                    complete_since bigint,
                    identity text
                ) WITH (fillfactor = 50);
                CREATE TABLE "\(s)".queue_clients (
                    queue text NOT NULL,
                    client text NOT NULL,
                    applied_at bigint NOT NULL,
                    sent_at bigint NOT NULL,
                    used_wall bigint NOT NULL,
                    PRIMARY KEY (queue, client)
                ) WITH (fillfactor = 50);
                CREATE TABLE "\(s)".jobs (
                    id bigserial PRIMARY KEY,
                    queue text NOT NULL,
                    payload bytea NOT NULL,
                    priority int NOT NULL,
                    max_attempts int NOT NULL,
                    idempotency_key text,
                    ordering_key text,
                    enqueued_at bigint NOT NULL,
                    stage text NOT NULL,
                    since bigint NOT NULL,
                    expires_at bigint,
                    worker text,
                    attempt int NOT NULL DEFAULT 0,
                    token bigint NOT NULL DEFAULT 0,
                    last_error text
                ) WITH (
                    fillfactor = 80,
                    autovacuum_vacuum_scale_factor = 0.01,
                    autovacuum_vacuum_threshold = 1000,
                    autovacuum_vacuum_insert_scale_factor = 0.05,
                    autovacuum_analyze_scale_factor = 0.02,
                    autovacuum_vacuum_cost_delay = 1
                );
                CREATE UNIQUE INDEX jobs_idempotency ON "\(s)".jobs (queue, idempotency_key) WHERE idempotency_key IS NOT NULL;
                CREATE INDEX jobs_available ON "\(s)".jobs (queue, priority DESC, since, id) WHERE stage = 'available';
                CREATE INDEX jobs_running ON "\(s)".jobs (queue, expires_at) WHERE stage = 'running';
                CREATE INDEX jobs_ordering ON "\(s)".jobs (queue, ordering_key, id)
                    WHERE ordering_key IS NOT NULL AND stage IN ('available', 'running');
                CREATE INDEX jobs_finished ON "\(s)".jobs (id) WHERE stage IN ('done', 'cancelled');
                CREATE INDEX jobs_dead ON "\(s)".jobs (queue, id) WHERE stage = 'dead';
                -- Normally empty: rows no client can have written, which a claim of their queue sends to the dead letter.
                CREATE INDEX jobs_odd ON "\(s)".jobs (queue)
                    WHERE stage NOT IN ('available', 'running', 'done', 'dead', 'cancelled');
            END IF;
        """
    }

    /// The queue functions: one per `JobQueueStore` operation.
    ///
    /// Time: each queue has a store clock (`queue_clocks.store_now`) with the groups' rule (`understudy_advance`):
    /// a claim or renewal advances it under the clock row's lock by the wall-clock delta, never backwards and no
    /// further than the calling client measured on its own monotonic clock since its previous claim or renewal
    /// (`queue_clients`), plus the slack. Other operations read it without a lock, extrapolated by the wall clock
    /// by at most ``queueReadAheadMicroseconds``. `p_now` (tests only) replaces the clock.
    static func queueFunctions(schema s: String) -> String {
        let channel = queueChannel(schema: s)
        let expired = "'the claim lease of attempt ' || j.attempt || ', its last, expired'"
        return """
            -- A queue's clock row, created at its first use: its record is complete from now, less the time for which
            -- the schema's record has been complete (a dropped schema or a restore loses rows).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_queue_clock(p_queue text, p_now bigint) RETURNS void
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_wall bigint := "\(s)".understudy_wall();
                v_complete_wall bigint;
            BEGIN
                SELECT value::bigint INTO v_complete_wall FROM "\(s)".understudy_meta WHERE key = 'complete_wall';
                INSERT INTO "\(s)".queue_clocks (queue, store_now, wall_at, complete_since, identity)
                    VALUES (p_queue, coalesce(p_now, v_wall), v_wall,
                        coalesce(p_now, v_wall) - greatest(v_wall - v_complete_wall, 0), "\(s)".understudy_identity())
                    ON CONFLICT (queue) DO NOTHING;
            END
            $fn$;

            -- The store time of a queue for a reader that does not advance it (NULL: the queue has no clock yet).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_queue_read_now(p_queue text, p_now bigint) RETURNS bigint
            LANGUAGE sql VOLATILE AS $fn$
                SELECT coalesce(p_now, (SELECT c.store_now + least(greatest("\(s)".understudy_wall() - c.wall_at, 0), \(queueReadAheadMicroseconds))
                    FROM "\(s)".queue_clocks c WHERE c.queue = p_queue))
            $fn$;

            -- Advances a queue's clock for a claim or renewal of client p_client sent at p_sent (its monotonic clock,
            -- µs), under the clock row's lock; p_ttl: the claim lease, the longest span taken as a measurement (if
            -- longer than the evidence window).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_queue_advance(
                p_queue text, p_client text, p_sent bigint, p_ttl bigint, p_now bigint,
                OUT o_now bigint, OUT o_complete_since bigint
            ) LANGUAGE plpgsql AS $fn$
            DECLARE
                c "\(s)".queue_clocks%ROWTYPE;
                k "\(s)".queue_clients%ROWTYPE;
                v_wall bigint;
                v_identity text := "\(s)".understudy_identity();
            BEGIN
                SELECT * INTO c FROM "\(s)".queue_clocks WHERE queue = p_queue FOR UPDATE;
                IF NOT FOUND THEN
                    PERFORM "\(s)".understudy_queue_clock(p_queue, p_now);
                    SELECT * INTO c FROM "\(s)".queue_clocks WHERE queue = p_queue FOR UPDATE;
                END IF;
                SELECT * INTO k FROM "\(s)".queue_clients WHERE queue = p_queue AND client = p_client;
                v_wall := "\(s)".understudy_wall();
                o_now := coalesce(p_now, "\(s)".understudy_advance(c.store_now, c.wall_at, v_wall, k.applied_at, k.sent_at, p_sent,
                    greatest(p_ttl, \(queueEvidenceWindowMicroseconds))));
                o_complete_since := c.complete_since;
                IF c.identity IS DISTINCT FROM v_identity THEN
                    -- Another server or another copy of the schema: claims it lost may still run.
                    o_complete_since := o_now;
                END IF;
                UPDATE "\(s)".queue_clocks SET store_now = o_now, wall_at = v_wall, complete_since = o_complete_since,
                    identity = v_identity WHERE queue = p_queue;
                -- A call of the same client sent earlier but applied later is no evidence, and leaves none.
                INSERT INTO "\(s)".queue_clients AS q (queue, client, applied_at, sent_at, used_wall)
                    VALUES (p_queue, p_client, o_now, p_sent, v_wall)
                    ON CONFLICT (queue, client) DO UPDATE SET applied_at = excluded.applied_at, sent_at = excluded.sent_at,
                        used_wall = excluded.used_wall
                    WHERE excluded.sent_at >= q.sent_at;
            END
            $fn$;

            -- Why a claimable row cannot be a job any client wrote, or NULL.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_job_fault(
                p_queue text, p_priority int, p_attempt int, p_max_attempts int, p_token bigint
            ) RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
                SELECT CASE
                    WHEN p_queue !~ '^[A-Za-z0-9._-]{1,128}$' THEN 'invalid queue name'
                    WHEN p_max_attempts IS NULL OR p_max_attempts NOT BETWEEN 1 AND 1000 THEN 'max attempts ' || coalesce(p_max_attempts::text, 'null')
                    WHEN p_attempt IS NULL OR p_attempt < 0 OR p_attempt >= p_max_attempts THEN 'attempt ' || coalesce(p_attempt::text, 'null') || ' of ' || p_max_attempts
                    WHEN p_priority IS NULL OR p_priority NOT BETWEEN -1000 AND 1000 THEN 'priority ' || coalesce(p_priority::text, 'null')
                    WHEN p_token IS NULL OR p_token < 0 OR p_token = 9223372036854775807 THEN 'token ' || coalesce(p_token::text, 'null')
                END
            $fn$;

            -- The state `queue stats` shows at p_now (NULL for a stage no client writes).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_job_state(
                p_stage text, p_since bigint, p_expires bigint, p_attempt int, p_max_attempts int, p_now bigint
            ) RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
                SELECT CASE p_stage
                    WHEN 'available' THEN CASE WHEN p_since > p_now THEN 'scheduled' ELSE 'pending' END
                    WHEN 'running' THEN CASE WHEN p_expires > p_now THEN 'running' WHEN p_attempt >= p_max_attempts THEN 'dead' ELSE 'pending' END
                    WHEN 'done' THEN 'done' WHEN 'dead' THEN 'dead' WHEN 'cancelled' THEN 'cancelled'
                END
            $fn$;

            -- Enqueues a batch in order (the arrays are its columns; '' for no key); for each, its id and whether a
            -- job of its queue already held its idempotency key. One announcement per queue.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_enqueue(
                p_queues text[], p_payloads bytea[], p_priorities int[], p_delays bigint[], p_attempts int[],
                p_idempotency text[], p_ordering text[], p_now bigint
            ) RETURNS TABLE (o_n int, o_id bigint, o_deduplicated boolean) LANGUAGE plpgsql AS $fn$
            DECLARE
                v_queue text;
                v_queues text[];
                v_nows bigint[] := '{}';
                v_ids bigint[];
                v_inserted bigint[];
            BEGIN
                SELECT array_agg(DISTINCT q) INTO v_queues FROM unnest(p_queues) q;
                FOREACH v_queue IN ARRAY coalesce(v_queues, '{}') LOOP
                    IF NOT EXISTS (SELECT 1 FROM "\(s)".queue_clocks WHERE queue = v_queue) THEN
                        PERFORM "\(s)".understudy_queue_clock(v_queue, p_now);
                    END IF;
                    v_nows := array_append(v_nows, "\(s)".understudy_queue_read_now(v_queue, p_now));
                    PERFORM pg_notify('\(channel)', v_queue);
                END LOOP;
                -- Ids in batch order, allocated before the insert so that each row's id is known.
                v_ids := ARRAY(SELECT nextval('"\(s)".jobs_id_seq') AS id FROM generate_series(1, cardinality(p_queues)) ORDER BY id);
                WITH input AS (
                    SELECT t.n, t.q, t.payload, t.priority, t.delay, t.attempts, nullif(t.ik, '') AS ik, nullif(t.ok, '') AS ok
                    FROM unnest(p_queues, p_payloads, p_priorities, p_delays, p_attempts, p_idempotency, p_ordering)
                        WITH ORDINALITY AS t (q, payload, priority, delay, attempts, ik, ok, n)
                ), inserted AS (
                    INSERT INTO "\(s)".jobs (id, queue, payload, priority, max_attempts, idempotency_key, ordering_key,
                            enqueued_at, stage, since)
                        SELECT v_ids[i.n], i.q, i.payload, i.priority, i.attempts, i.ik, i.ok, c.now, 'available', c.now + i.delay
                        FROM input i JOIN unnest(v_queues, v_nows) AS c (queue, now) ON c.queue = i.q
                        ORDER BY i.n
                        ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                        RETURNING id
                )
                SELECT coalesce(array_agg(id), '{}') INTO v_inserted FROM inserted;
                -- A new statement: it sees holders that committed while this insert waited for them.
                RETURN QUERY
                    SELECT t.n::int,
                        CASE WHEN x.id IS NOT NULL THEN x.id
                            ELSE (SELECT j.id FROM "\(s)".jobs j WHERE j.queue = t.q AND j.idempotency_key = t.ik) END,
                        x.id IS NULL
                    FROM unnest(p_queues, p_idempotency) WITH ORDINALITY AS t (q, ik, n)
                    LEFT JOIN unnest(v_inserted) AS x (id) ON x.id = v_ids[t.n]
                    ORDER BY t.n;
            END
            $fn$;

            -- Claims up to p_limit claimable jobs of p_queue for p_worker, each under a lease of p_lease from now.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_claim(
                p_queue text, p_worker text, p_limit int, p_lease bigint, p_client text, p_sent bigint, p_now bigint
            ) RETURNS TABLE (o_id bigint, o_payload bytea, o_attempt int, o_max_attempts int, o_token bigint, o_waited bigint)
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_now bigint;
                v_complete_since bigint;
                v_wall bigint;
            BEGIN
                -- Claims of a queue apply one after another, under its clock row's lock.
                SELECT a.o_now, a.o_complete_since INTO v_now, v_complete_since
                    FROM "\(s)".understudy_queue_advance(p_queue, p_client, p_sent, p_lease, p_now) a;
                -- A record that may be incomplete grants no claim for one claim lease.
                IF v_complete_since IS NOT NULL AND v_now - p_lease < v_complete_since THEN RETURN; END IF;
                v_wall := "\(s)".understudy_wall();
                -- Rows no client can have written go to the dead letter, so they hold nothing up. Two statements, so
                -- that each reads only its (normally empty) part of a partial index: one with an OR of both
                -- conditions matched no index and scanned the whole table, finished jobs included, on every claim.
                UPDATE "\(s)".jobs SET stage = 'dead', since = v_now, expires_at = NULL,
                        last_error = 'corrupt row: unknown stage "' || left(stage, 40) || '"'
                    WHERE queue = p_queue AND stage NOT IN ('available', 'running', 'done', 'dead', 'cancelled');
                UPDATE "\(s)".jobs SET stage = 'dead', since = v_now,
                        last_error = 'corrupt row: running without a claim expiry'
                    WHERE queue = p_queue AND stage = 'running' AND expires_at IS NULL;
                -- Expired claims: claimable at once from their expiry, or dead on their last attempt.
                UPDATE "\(s)".jobs j SET stage = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'available' END,
                        since = j.expires_at, expires_at = NULL, worker = NULL,
                        last_error = CASE WHEN j.attempt >= j.max_attempts THEN \(expired) ELSE j.last_error END
                    WHERE j.queue = p_queue AND j.stage = 'running' AND j.expires_at <= v_now;
                RETURN QUERY
                WITH picked AS (
                    SELECT j.id, j.since, "\(s)".understudy_job_fault(j.queue, j.priority, j.attempt, j.max_attempts, j.token) AS fault
                    FROM "\(s)".jobs j
                    WHERE j.queue = p_queue AND j.stage = 'available' AND j.since <= v_now
                        AND (j.ordering_key IS NULL OR NOT EXISTS (
                            SELECT 1 FROM "\(s)".jobs e
                            WHERE e.queue = p_queue AND e.ordering_key = j.ordering_key AND e.id < j.id
                                AND e.stage IN ('available', 'running')))
                    ORDER BY j.priority DESC, j.since, j.id
                    LIMIT greatest(p_limit, 0)
                    FOR UPDATE OF j SKIP LOCKED
                ), corrupt AS (
                    UPDATE "\(s)".jobs j SET stage = 'dead', since = v_now, last_error = 'corrupt row: ' || p.fault
                    FROM picked p WHERE j.id = p.id AND p.fault IS NOT NULL
                ), claimed AS (
                    UPDATE "\(s)".jobs j SET stage = 'running', attempt = j.attempt + 1, token = greatest(j.token + 1, v_wall),
                        since = v_now, expires_at = v_now + p_lease, worker = p_worker
                    FROM picked p WHERE j.id = p.id AND p.fault IS NULL
                    RETURNING j.id, j.payload, j.attempt, j.max_attempts, j.token, v_now - p.since AS waited, j.priority, p.since
                )
                SELECT c.id, c.payload, c.attempt, c.max_attempts, c.token, c.waited FROM claimed c
                ORDER BY c.priority DESC, c.since, c.id;
            END
            $fn$;

            -- Marks rows the client could not read as dead (rare: the claim already checks what it can).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_job_corrupt(p_ids bigint[], p_faults text[], p_now bigint) RETURNS void
            LANGUAGE sql AS $fn$
                UPDATE "\(s)".jobs j SET stage = 'dead', expires_at = NULL, last_error = 'corrupt row: ' || f.fault,
                    since = coalesce("\(s)".understudy_queue_read_now(j.queue, p_now), j.since)
                FROM unnest(p_ids, p_faults) AS f (id, fault) WHERE j.id = f.id
            $fn$;

            -- The store time of each queue among the jobs p_ids, for readers.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_queue_nows(p_ids bigint[], p_now bigint)
            RETURNS TABLE (o_queue text, o_now bigint) LANGUAGE sql VOLATILE AS $fn$
                SELECT q.queue, "\(s)".understudy_queue_read_now(q.queue, p_now)
                FROM (SELECT DISTINCT j.queue FROM "\(s)".jobs j WHERE j.id = ANY(p_ids)) q
            $fn$;

            -- Renews each claim still valid for p_lease from now; whether it was, in order. Advances the clock of each
            -- queue concerned, in name order (so concurrent renewals lock clocks in the same order).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_renew(
                p_ids bigint[], p_tokens bigint[], p_lease bigint, p_client text, p_sent bigint, p_now bigint
            ) RETURNS boolean[] LANGUAGE plpgsql AS $fn$
            DECLARE
                v_queue text;
                v_queues text[] := '{}';
                v_nows bigint[] := '{}';
                v_result boolean[];
            BEGIN
                FOR v_queue IN SELECT DISTINCT j.queue FROM "\(s)".jobs j WHERE j.id = ANY(p_ids) ORDER BY 1 LOOP
                    v_queues := array_append(v_queues, v_queue);
                    v_nows := array_append(v_nows, (SELECT a.o_now FROM "\(s)".understudy_queue_advance(v_queue, p_client, p_sent, p_lease, p_now) a));
                END LOOP;
                WITH input AS (
                    SELECT t.id, t.token, t.n FROM unnest(p_ids, p_tokens) WITH ORDINALITY AS t (id, token, n)
                ), renewed AS (
                    UPDATE "\(s)".jobs j SET expires_at = c.now + p_lease
                    FROM (SELECT DISTINCT id, token FROM input) i, unnest(v_queues, v_nows) AS c (queue, now)
                    WHERE j.id = i.id AND j.token = i.token AND c.queue = j.queue AND j.stage = 'running' AND j.expires_at > c.now
                    RETURNING j.id, j.token
                )
                SELECT array_agg(r.id IS NOT NULL ORDER BY i.n) INTO v_result
                FROM input i LEFT JOIN renewed r ON r.id = i.id AND r.token = i.token;
                RETURN coalesce(v_result, '{}');
            END
            $fn$;

            -- Records outcomes (p_failed: a failure with p_errors and p_retry µs, else a completion); for each, the
            -- state the job is in now, or NULL: stale. Of several outcomes of one claim, only the first counts.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_record(
                p_ids bigint[], p_tokens bigint[], p_failed boolean[], p_errors text[], p_retry bigint[], p_now bigint
            ) RETURNS text[] LANGUAGE sql AS $fn$
                WITH input AS (
                    SELECT t.* FROM unnest(p_ids, p_tokens, p_failed, p_errors, p_retry) WITH ORDINALITY AS t (id, token, failed, error, retry, n)
                ), firsts AS (
                    SELECT DISTINCT ON (id, token) * FROM input ORDER BY id, token, n
                ), recorded AS (
                    UPDATE "\(s)".jobs j SET
                        stage = CASE WHEN NOT f.failed THEN 'done' WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'available' END,
                        since = CASE WHEN f.failed AND j.attempt < j.max_attempts THEN c.o_now + greatest(f.retry, 0) ELSE c.o_now END,
                        last_error = CASE WHEN f.failed THEN f.error ELSE j.last_error END,
                        expires_at = NULL, worker = NULL
                    FROM firsts f, "\(s)".understudy_queue_nows(p_ids, p_now) c
                    WHERE j.id = f.id AND j.token = f.token AND c.o_queue = j.queue AND j.stage = 'running' AND j.expires_at > c.o_now
                    RETURNING f.n, CASE WHEN j.stage = 'available' THEN CASE WHEN f.retry > 0 THEN 'scheduled' ELSE 'pending' END
                        ELSE j.stage END AS state
                )
                SELECT coalesce(array_agg(r.state ORDER BY i.n), '{}') FROM input i LEFT JOIN recorded r ON r.n = i.n
            $fn$;

            -- Gives claims back: each still valid is claimable at once and its attempt does not count. Announces the
            -- queues of those given back, once each.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_release(p_ids bigint[], p_tokens bigint[], p_now bigint) RETURNS int
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_queues text[];
                v_queue text;
            BEGIN
                WITH released AS (
                    UPDATE "\(s)".jobs j SET stage = 'available', since = c.o_now, attempt = j.attempt - 1, expires_at = NULL, worker = NULL
                    FROM (SELECT DISTINCT id, token FROM unnest(p_ids, p_tokens) AS t (id, token)) i,
                        "\(s)".understudy_queue_nows(p_ids, p_now) c
                    WHERE j.id = i.id AND j.token = i.token AND c.o_queue = j.queue AND j.stage = 'running' AND j.expires_at > c.o_now
                    RETURNING j.queue
                )
                SELECT array_agg(DISTINCT queue) INTO v_queues FROM released;
                FOREACH v_queue IN ARRAY coalesce(v_queues, '{}') LOOP
                    PERFORM pg_notify('\(channel)', v_queue);
                END LOOP;
                RETURN coalesce(cardinality(v_queues), 0);
            END
            $fn$;

            -- Cancels a job that is not done; its state afterwards ('done' or 'cancelled'), NULL if there is none.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_cancel(p_id bigint, p_now bigint) RETURNS text LANGUAGE plpgsql AS $fn$
            DECLARE
                j "\(s)".jobs%ROWTYPE;
                v_now bigint;
                v_state text;
            BEGIN
                SELECT * INTO j FROM "\(s)".jobs WHERE id = p_id FOR UPDATE;
                IF NOT FOUND THEN RETURN NULL; END IF;
                v_now := coalesce("\(s)".understudy_queue_read_now(j.queue, p_now), j.since);
                v_state := "\(s)".understudy_job_state(j.stage, j.since, j.expires_at, j.attempt, j.max_attempts, v_now);
                IF v_state = 'done' THEN RETURN 'done'; END IF;
                IF v_state IS DISTINCT FROM 'cancelled' THEN
                    UPDATE "\(s)".jobs SET stage = 'cancelled', since = v_now, expires_at = NULL, worker = NULL WHERE id = p_id;
                END IF;
                RETURN 'cancelled';
            END
            $fn$;

            -- Makes the dead jobs of p_queue (only p_ids, unless NULL) pending again with their attempts reset (a
            -- claim that expired on its last attempt is dead too); how many. Announces the queue if any.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_redrive(p_queue text, p_ids bigint[], p_now bigint) RETURNS int
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_now bigint := "\(s)".understudy_queue_read_now(p_queue, p_now);
                v_count int;
            BEGIN
                IF v_now IS NULL THEN RETURN 0; END IF;
                UPDATE "\(s)".jobs j SET stage = 'available', since = v_now, attempt = 0, expires_at = NULL, worker = NULL,
                        last_error = CASE WHEN j.stage = 'running' THEN \(expired) ELSE j.last_error END
                    WHERE j.queue = p_queue AND (p_ids IS NULL OR j.id = ANY(p_ids))
                        AND (j.stage = 'dead' OR (j.stage = 'running' AND j.expires_at <= v_now AND j.attempt >= j.max_attempts));
                GET DIAGNOSTICS v_count = ROW_COUNT;
                IF v_count > 0 THEN PERFORM pg_notify('\(channel)', p_queue); END IF;
                RETURN v_count;
            END
            $fn$;

            -- Deletes at most p_limit jobs done or cancelled at least p_retention ago, oldest id first; how many. Also
            -- forgets the clock evidence of clients unseen for a day.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_prune(p_retention bigint, p_limit int, p_now bigint) RETURNS int
            LANGUAGE plpgsql AS $fn$
            DECLARE
                v_count int;
            BEGIN
                WITH nows AS (
                    SELECT c.queue, "\(s)".understudy_queue_read_now(c.queue, p_now) AS now FROM "\(s)".queue_clocks c
                ), victims AS (
                    SELECT j.id FROM "\(s)".jobs j JOIN nows n ON n.queue = j.queue
                    WHERE j.stage IN ('done', 'cancelled') AND j.since <= n.now - p_retention
                    ORDER BY j.id LIMIT greatest(p_limit, 0)
                    FOR UPDATE OF j SKIP LOCKED
                )
                DELETE FROM "\(s)".jobs WHERE id IN (SELECT id FROM victims);
                GET DIAGNOSTICS v_count = ROW_COUNT;
                DELETE FROM "\(s)".queue_clients WHERE used_wall < "\(s)".understudy_wall() - 86400000000;
                RETURN v_count;
            END
            $fn$;

            -- Per queue (only p_queue's, unless NULL) and state, how many jobs, and for pending ones how long the
            -- oldest has waited since it became claimable. Rows of an invalid queue name or stage are left out.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_queue_stats(p_queue text, p_now bigint)
            RETURNS TABLE (o_queue text, o_state text, o_count bigint, o_oldest bigint) LANGUAGE sql VOLATILE AS $fn$
                WITH nows AS (
                    SELECT c.queue, "\(s)".understudy_queue_read_now(c.queue, p_now) AS now FROM "\(s)".queue_clocks c
                    WHERE p_queue IS NULL OR c.queue = p_queue
                ), states AS (
                    SELECT j.queue, n.now, "\(s)".understudy_job_state(j.stage, j.since, j.expires_at, j.attempt, j.max_attempts, n.now) AS state,
                        CASE WHEN j.stage = 'running' THEN j.expires_at ELSE j.since END AS since
                    FROM "\(s)".jobs j JOIN nows n ON n.queue = j.queue
                    WHERE (p_queue IS NULL OR j.queue = p_queue) AND j.queue ~ '^[A-Za-z0-9._-]{1,128}$'
                )
                SELECT queue, state, count(*), CASE WHEN state = 'pending' THEN now - min(since) END
                FROM states WHERE state IS NOT NULL GROUP BY queue, now, state ORDER BY queue, state
            $fn$;

            -- Jobs as `queue list` shows them: the one p_id, or at most p_limit in state p_state (of p_queue, unless
            -- NULL) in id order after p_after. A list leaves out rows of an invalid queue name or stage.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_jobs(
                p_queue text, p_state text, p_after bigint, p_limit int, p_id bigint, p_now bigint
            ) RETURNS TABLE (o_id bigint, o_queue text, o_state text, o_priority int, o_attempt int, o_max_attempts int,
                o_idempotency_key text, o_ordering_key text, o_last_error text, o_size int, o_age bigint)
            LANGUAGE sql VOLATILE AS $fn$
                SELECT r.* FROM (
                    SELECT j.id, j.queue, "\(s)".understudy_job_state(j.stage, j.since, j.expires_at, j.attempt, j.max_attempts, n.now) AS state,
                        j.priority, j.attempt, j.max_attempts, j.idempotency_key, j.ordering_key,
                        CASE WHEN j.stage = 'running' AND j.expires_at <= n.now AND j.attempt >= j.max_attempts THEN \(expired)
                            ELSE j.last_error END,
                        octet_length(j.payload), n.now - j.enqueued_at
                    FROM "\(s)".jobs j
                    CROSS JOIN LATERAL (SELECT coalesce("\(s)".understudy_queue_read_now(j.queue, p_now), j.enqueued_at) AS now) n
                    WHERE (p_id IS NULL OR j.id = p_id) AND (p_queue IS NULL OR j.queue = p_queue) AND j.id > coalesce(p_after, 0)
                ) r
                WHERE p_id IS NOT NULL OR (r.state = p_state AND r.queue ~ '^[A-Za-z0-9._-]{1,128}$')
                ORDER BY r.id LIMIT CASE WHEN p_id IS NULL THEN greatest(p_limit, 0) ELSE 1 END
            $fn$;
        """
    }
}
