/// The SQL that creates and migrates Understudy's schema in PostgreSQL, and the functions that apply
/// heartbeats on the server, in one round trip.
///
/// `understudy_heartbeat` implements exactly the rules of `GroupLedger.apply(_:at:)`; the store conformance
/// suite and a differential test run it against the ledger. `understudy_heartbeats` applies a batch in group-name
/// order (so concurrent batches lock groups in the same order and cannot deadlock); with `p_isolate` each heartbeat
/// runs in its own subtransaction, so one bad row fails only its own heartbeat.
///
/// Time (see "Clocks" in docs/design.md): each group has a **store clock** (`groups.store_now`), advanced under the
/// group's row lock by the server's wall-clock delta since the last advance (`wall_at`), never backwards, and no
/// further than the heartbeating member's own measurement allows: its previous heartbeat was applied at
/// `members.heartbeat_at` and sent at `members.sent_at` on its monotonic clock, so the store clock may stand at most
/// `heartbeat_at + (p_sent − sent_at) + slack` now. A heartbeat without such evidence (the first of an incarnation)
/// advances it by at most the slack. A heartbeat refused because an older incarnation's row holds the member id
/// leaves its evidence in that row (`refused_incarnation`, `refused_at`, `refused_sent`) for the next attempt, so a
/// group whose members all wait for their ids still measures time. `StoreClock` is the same rule in Swift. Leases
/// and memberships are judged on the store clock only.
///
/// History (the `StoreMoment` the ledger is given): a grant takes at least the server's wall clock in microseconds
/// (the token floor), and no slot is granted within T of `groups.complete_since`, the store time at which the
/// group's record may have become incomplete: the group appeared (a dropped schema or a restore loses rows; the
/// wait is cut short when the schema's record has been complete for longer), or the server's identity changed
/// (`groups.identity`: system identifier, timeline and schema OID — a failover, a restore, a recreated schema), or a
/// client has seen a larger token than the group's record holds (a restore that lost grants).
enum PostgresSchema {
    static let version = 2

    /// How far a store clock may run ahead of what a member measured between two of its heartbeats (µs): the
    /// variation in how long heartbeats take from being sent to being applied that is still taken as real time.
    static let clockSlackMicroseconds: Int64 = 25_000

    /// The notification channel on which releases and joins are announced, with the group name as payload.
    /// PostgreSQL truncates identifiers to 63 bytes and `pg_notify` refuses longer channels, so a long schema name
    /// is shortened and a hash of the whole name appended.
    static func channel(schema: String) -> String {
        let plain = "understudy_\(schema)"
        guard plain.utf8.count > 63 else { return plain }
        let hash = schema.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        let hex = String(hash, radix: 16)
        return "understudy_\(schema.prefix(32))_\(String(repeating: "0", count: 16 - hex.count))\(hex)"
    }

    /// One `DO` block, serialized by an advisory lock, that creates, checks or migrates the schema and (re)defines
    /// the functions. `schema` MUST already be validated as a plain identifier.
    static func migration(schema s: String) -> String {
        """
        DO $do$
        DECLARE
            v_version text;
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtext('understudy-migration'), hashtext('\(s)'));
            CREATE SCHEMA IF NOT EXISTS "\(s)";
            IF to_regclass('"\(s)".understudy_meta') IS NOT NULL THEN
                SELECT value INTO v_version FROM "\(s)".understudy_meta WHERE key = 'schema_version';
                IF v_version IS NULL OR v_version !~ '^[0-9]+$' THEN
                    RAISE EXCEPTION 'understudy: schema "\(s)" has no readable schema version';
                END IF;
                IF v_version::int > \(version) THEN
                    RAISE EXCEPTION 'understudy: schema "\(s)" has schema version %, newer than this Understudy supports (\(version)): upgrade Understudy', v_version;
                END IF;
            ELSIF EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = '\(s)') THEN
                RAISE EXCEPTION 'understudy: schema "\(s)" belongs to another application: choose another ?schema=';
            ELSE
                CREATE TABLE "\(s)".understudy_meta (key text PRIMARY KEY, value text NOT NULL);
                CREATE TABLE "\(s)".groups (
                    name text PRIMARY KEY,
                    active_goal int NOT NULL,
                    last_token bigint NOT NULL,
                    next_join bigint NOT NULL
                );
                CREATE TABLE "\(s)".members (
                    group_name text NOT NULL REFERENCES "\(s)".groups (name),
                    member_id text NOT NULL,
                    incarnation text NOT NULL,
                    weight int NOT NULL,
                    host text NOT NULL,
                    pid int NOT NULL,
                    join_seq bigint NOT NULL,
                    phase text NOT NULL,
                    heartbeat_at bigint NOT NULL,
                    expires_at bigint NOT NULL,
                    PRIMARY KEY (group_name, member_id)
                );
                CREATE TABLE "\(s)".leases (
                    group_name text NOT NULL REFERENCES "\(s)".groups (name),
                    slot int NOT NULL,
                    holder text,
                    incarnation text,
                    token bigint,
                    expires_at bigint,
                    PRIMARY KEY (group_name, slot)
                );
                -- A new schema may replace a dropped one whose leases still run: its record is complete from now.
                INSERT INTO "\(s)".understudy_meta (key, value) VALUES
                    ('application', 'understudy'), ('schema_version', '1'),
                    ('complete_wall', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint::text);
                v_version := '1';
            END IF;

            -- The server's wall clock in microseconds since 1970, plus the offset tests step it by
            -- (understudy_meta 'test_wall_offset'; absent in production).
            CREATE OR REPLACE FUNCTION "\(s)".understudy_wall() RETURNS bigint LANGUAGE sql VOLATILE AS $fn$
                SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
                    + coalesce((SELECT value::bigint FROM "\(s)".understudy_meta WHERE key = 'test_wall_offset'), 0)
            $fn$;

            -- Which record the schema's rows belong to: a failover or a point-in-time restore changes the timeline,
            -- a restore into another cluster the system identifier, a dropped and recreated schema its OID.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_identity() RETURNS text LANGUAGE sql VOLATILE AS $fn$
                SELECT (SELECT system_identifier::text FROM pg_control_system())
                    || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)
                    || '/' || '"\(s)"'::regnamespace::oid::text
            $fn$;

            IF v_version = '1' THEN
                -- Version 2: a store clock per group, the history of the group's record, members' send instants.
                -- Version 1 judged time on the server's wall clock, so each store clock starts there.
                ALTER TABLE "\(s)".groups
                    ADD COLUMN IF NOT EXISTS store_now bigint NOT NULL DEFAULT 0,
                    ADD COLUMN IF NOT EXISTS wall_at bigint NOT NULL DEFAULT 0,
                    ADD COLUMN IF NOT EXISTS complete_since bigint,
                    ADD COLUMN IF NOT EXISTS identity text;
                ALTER TABLE "\(s)".members ADD COLUMN IF NOT EXISTS sent_at bigint;
                -- The rows so far are taken to be the complete record of this server.
                UPDATE "\(s)".groups SET store_now = "\(s)".understudy_wall(), wall_at = "\(s)".understudy_wall(),
                    identity = "\(s)".understudy_identity();
                INSERT INTO "\(s)".understudy_meta (key, value) VALUES ('complete_wall', '0') ON CONFLICT (key) DO NOTHING;
                UPDATE "\(s)".understudy_meta SET value = '\(version)' WHERE key = 'schema_version';
            END IF;
            -- The newest heartbeat refused because another incarnation holds the id: a waiting member's evidence.
            -- Additive, so schemas of version 2 get it without a new version; checked first so that opening a store
            -- does not lock the table.
            IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = '\(s)' AND table_name = 'members' AND column_name = 'refused_sent') THEN
                ALTER TABLE "\(s)".members ADD COLUMN refused_incarnation text, ADD COLUMN refused_at bigint,
                    ADD COLUMN refused_sent bigint;
            END IF;

            -- What members of version 1 read as the server's clock.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_now() RETURNS bigint LANGUAGE sql VOLATILE AS
                $fn$ SELECT "\(s)".understudy_wall() $fn$;

            -- The store clock of a group for a reader that applies no heartbeat (status): extrapolated by the wall
            -- clock, never behind the last heartbeat.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_group_now(p_group text) RETURNS bigint LANGUAGE sql VOLATILE AS $fn$
                SELECT g.store_now + greatest("\(s)".understudy_wall() - g.wall_at, 0)
                FROM "\(s)".groups g WHERE g.name = p_group
            $fn$;

            -- The store clock after a heartbeat of the member whose previous heartbeat of the same incarnation,
            -- if any, was applied at p_prev_at (store time) and sent at p_prev_sent (its clock); p_sent: when it
            -- sent this one. The wall-clock delta since p_wall_at, never backwards, and no further than that
            -- member measured (plus the slack); only the slack without such a measurement. A client that sends no
            -- send instants (version 1, during a rolling upgrade) moves it by the wall-clock delta. Only corrupt
            -- rows overflow, and the error fails that group's heartbeat.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_advance(
                p_store_now bigint, p_wall_at bigint, p_wall bigint,
                p_prev_at bigint, p_prev_sent bigint, p_sent bigint, p_ttl bigint
            ) RETURNS bigint LANGUAGE sql IMMUTABLE AS $fn$
                SELECT greatest(p_store_now, least(
                    p_store_now + greatest(p_wall - p_wall_at, 0),
                    CASE
                        WHEN p_sent IS NULL THEN 9223372036854775807
                        WHEN p_sent >= p_prev_sent AND p_sent - p_prev_sent <= p_ttl
                            THEN p_prev_at + (p_sent - p_prev_sent) + \(clockSlackMicroseconds)
                        ELSE p_store_now + \(clockSlackMicroseconds)
                    END))
            $fn$;

            CREATE OR REPLACE FUNCTION "\(s)".understudy_view(p_group text, p_now bigint) RETURNS jsonb
            LANGUAGE sql STABLE AS $fn$
                SELECT jsonb_build_object(
                    'group', g.name,
                    'goal', g.active_goal,
                    'lastToken', g.last_token,
                    'members', coalesce((
                        SELECT jsonb_agg(jsonb_build_object(
                            'id', m.member_id, 'incarnation', m.incarnation, 'weight', m.weight, 'host', m.host,
                            'pid', m.pid, 'join', m.join_seq, 'phase', m.phase, 'age', p_now - m.heartbeat_at
                        ) ORDER BY m.join_seq)
                        FROM "\(s)".members m WHERE m.group_name = g.name AND m.expires_at > p_now), '[]'::jsonb),
                    'leases', coalesce((
                        SELECT jsonb_agg(jsonb_build_object(
                            'slot', l.slot, 'holder', l.holder, 'token', l.token, 'remaining', l.expires_at - p_now
                        ) ORDER BY l.slot)
                        FROM "\(s)".leases l
                        WHERE l.group_name = g.name AND l.holder IS NOT NULL AND l.expires_at > p_now), '[]'::jsonb)
                )
                FROM "\(s)".groups g WHERE g.name = p_group
            $fn$;

            DROP FUNCTION IF EXISTS "\(s)".understudy_heartbeat(text, int, bigint, text, text, int, text, int, text, text, bigint, bigint);

            -- One heartbeat. p_sent: when the member sent it, on its own clock; p_seen: the largest token of the group
            -- its client has seen; p_now: for tests only, the store time to judge on instead of the group's clock.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_heartbeat(
                p_group text, p_goal int, p_ttl bigint, p_member text, p_incarnation text, p_weight int,
                p_host text, p_pid int, p_phase text, p_intent text, p_token bigint, p_sent bigint, p_seen bigint,
                p_now bigint
            ) RETURNS jsonb LANGUAGE plpgsql AS $fn$
            DECLARE
                g "\(s)".groups%ROWTYPE;
                e "\(s)".members%ROWTYPE;
                v_wall bigint;
                v_now bigint;
                v_identity text;
                v_complete_wall bigint;
                v_found boolean;
                v_outcome text := 'none';
                v_token bigint;
                v_slot int;
                v_join bigint;
            BEGIN
                -- The common case, a renewal or a standby's heartbeat from a live member of a group with this goal,
                -- takes a short path. It takes the same group lock first, so heartbeats of a group still apply one
                -- after another. Rows that expired are left to the next heartbeat that takes the full path below;
                -- views and renewals already ignore them. It grants nothing, so it needs no history.
                IF p_intent IN ('renew', 'none') THEN
                    SELECT * INTO g FROM "\(s)".groups WHERE name = p_group AND active_goal = p_goal FOR UPDATE;
                    IF FOUND THEN
                        SELECT * INTO e FROM "\(s)".members
                            WHERE group_name = p_group AND member_id = p_member AND incarnation = p_incarnation;
                        v_wall := "\(s)".understudy_wall();
                        v_now := coalesce(p_now, "\(s)".understudy_advance(
                            g.store_now, g.wall_at, v_wall, e.heartbeat_at, e.sent_at, p_sent, p_ttl));
                        IF e.expires_at > v_now THEN
                            UPDATE "\(s)".groups SET store_now = v_now, wall_at = v_wall WHERE name = p_group;
                            UPDATE "\(s)".members SET weight = p_weight, host = p_host, pid = p_pid, phase = p_phase,
                                    heartbeat_at = v_now, expires_at = v_now + p_ttl, sent_at = p_sent
                                WHERE group_name = p_group AND member_id = p_member;
                            IF p_intent = 'renew' THEN
                                UPDATE "\(s)".leases SET expires_at = v_now + p_ttl
                                    WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation
                                        AND token = p_token AND expires_at > v_now;
                                v_outcome := CASE WHEN FOUND THEN 'renewed' ELSE 'lost' END;
                            END IF;
                            RETURN jsonb_build_object('outcome', v_outcome, 'token', NULL, 'view', "\(s)".understudy_view(p_group, v_now));
                        END IF;
                    END IF;
                END IF;

                v_identity := "\(s)".understudy_identity();
                IF NOT EXISTS (SELECT 1 FROM "\(s)".groups WHERE name = p_group) THEN
                    -- A group without a row may have lost it (a dropped schema, a restore): its record is complete
                    -- from now, less the time for which the schema's record has been complete.
                    v_wall := "\(s)".understudy_wall();
                    SELECT value::bigint INTO v_complete_wall FROM "\(s)".understudy_meta WHERE key = 'complete_wall';
                    INSERT INTO "\(s)".groups
                        (name, active_goal, last_token, next_join, store_now, wall_at, complete_since, identity)
                        VALUES (p_group, p_goal, 0, 1, coalesce(p_now, v_wall), v_wall,
                            coalesce(p_now, v_wall) - least(greatest(v_wall - v_complete_wall, 0), p_ttl), v_identity)
                        ON CONFLICT (name) DO NOTHING;
                END IF;
                -- Every heartbeat of a group takes this row lock: they apply one after another.
                SELECT * INTO g FROM "\(s)".groups WHERE name = p_group FOR UPDATE;
                SELECT * INTO e FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member;
                v_wall := "\(s)".understudy_wall();
                IF e.incarnation = p_incarnation THEN
                    v_now := coalesce(p_now, "\(s)".understudy_advance(
                        g.store_now, g.wall_at, v_wall, e.heartbeat_at, e.sent_at, p_sent, p_ttl));
                ELSIF e.refused_incarnation = p_incarnation THEN
                    v_now := coalesce(p_now, "\(s)".understudy_advance(
                        g.store_now, g.wall_at, v_wall, e.refused_at, e.refused_sent, p_sent, p_ttl));
                ELSE
                    v_now := coalesce(p_now, "\(s)".understudy_advance(g.store_now, g.wall_at, v_wall, NULL, NULL, p_sent, p_ttl));
                END IF;
                IF g.identity IS DISTINCT FROM v_identity THEN
                    -- Another server or another copy of the schema: leases it lost may still run.
                    g.complete_since := v_now;
                END IF;
                IF p_seen > g.last_token THEN
                    -- A client saw a grant this record does not hold: it lost commits (a restore the identity does
                    -- not reveal). Leases it lost may still run; the counter goes on from what was seen.
                    g.complete_since := v_now;
                    g.last_token := p_seen;
                END IF;
                UPDATE "\(s)".groups SET store_now = v_now, wall_at = v_wall, complete_since = g.complete_since,
                    identity = v_identity, last_token = g.last_token WHERE name = p_group;

                DELETE FROM "\(s)".members WHERE group_name = p_group AND expires_at <= v_now;
                UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                    WHERE group_name = p_group AND holder IS NOT NULL AND expires_at <= v_now;

                v_found := coalesce(e.expires_at > v_now, false);
                IF v_found AND e.incarnation <> p_incarnation THEN
                    -- Its retries measure time too: a group whose members all wait for their ids would otherwise
                    -- move its store clock by the slack only, and the rows they wait for would not expire.
                    UPDATE "\(s)".members SET refused_incarnation = p_incarnation, refused_at = v_now, refused_sent = p_sent
                        WHERE group_name = p_group AND member_id = p_member;
                    RETURN jsonb_build_object('rejection', 'member-id-in-use', 'host', e.host, 'pid', e.pid);
                END IF;

                IF g.active_goal <> p_goal OR (SELECT count(*) FROM "\(s)".leases WHERE group_name = p_group) <> p_goal THEN
                    IF EXISTS (SELECT 1 FROM "\(s)".members WHERE group_name = p_group AND member_id <> p_member)
                        OR EXISTS (SELECT 1 FROM "\(s)".leases WHERE group_name = p_group AND holder IS NOT NULL) THEN
                        RETURN jsonb_build_object('rejection', 'active-goal-mismatch', 'stored', g.active_goal);
                    END IF;
                    UPDATE "\(s)".groups SET active_goal = p_goal WHERE name = p_group;
                    DELETE FROM "\(s)".leases WHERE group_name = p_group;
                    INSERT INTO "\(s)".leases (group_name, slot) SELECT p_group, slot FROM generate_series(0, p_goal - 1) AS slot;
                END IF;

                IF p_intent = 'leave' THEN
                    IF p_token IS NOT NULL THEN
                        UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation AND token = p_token;
                        IF FOUND THEN PERFORM pg_notify('\(channel(schema: s))', p_group); END IF;
                    END IF;
                    DELETE FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member;
                    v_outcome := 'left';
                ELSE
                    IF v_found THEN
                        v_join := e.join_seq;
                    ELSE
                        -- Saturates rather than fails on a corrupt counter, as the ledger does.
                        v_join := g.next_join;
                        UPDATE "\(s)".groups SET next_join = next_join + 1
                            WHERE name = p_group AND next_join < 9223372036854775807;
                        -- A joiner may outrank an active, which should hear of it before its next heartbeat.
                        PERFORM pg_notify('\(channel(schema: s))', p_group);
                    END IF;
                    INSERT INTO "\(s)".members
                        (group_name, member_id, incarnation, weight, host, pid, join_seq, phase, heartbeat_at, expires_at, sent_at)
                        VALUES (p_group, p_member, p_incarnation, p_weight, p_host, p_pid, v_join, p_phase, v_now, v_now + p_ttl, p_sent)
                        ON CONFLICT (group_name, member_id) DO UPDATE SET
                            incarnation = excluded.incarnation, weight = excluded.weight, host = excluded.host,
                            pid = excluded.pid, join_seq = excluded.join_seq, phase = excluded.phase,
                            heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at, sent_at = excluded.sent_at;

                    IF p_intent = 'acquire' THEN
                        UPDATE "\(s)".leases SET expires_at = v_now + p_ttl
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation
                            RETURNING token INTO v_token;
                        IF FOUND THEN
                            v_outcome := 'granted';
                        ELSE
                            SELECT slot INTO v_slot FROM "\(s)".leases
                                WHERE group_name = p_group AND holder IS NULL ORDER BY slot LIMIT 1;
                            -- A free slot, a record complete for T, and a counter not exhausted (only a corrupt row
                            -- exhausts it). The token is the next count, or the wall clock in µs if that is larger.
                            IF FOUND AND (g.complete_since IS NULL OR v_now - p_ttl >= g.complete_since)
                                AND g.last_token < 9223372036854775807 THEN
                                v_token := greatest(g.last_token + 1, v_wall);
                                UPDATE "\(s)".groups SET last_token = v_token WHERE name = p_group;
                                UPDATE "\(s)".leases SET holder = p_member, incarnation = p_incarnation, token = v_token,
                                    expires_at = v_now + p_ttl
                                    WHERE group_name = p_group AND slot = v_slot;
                                v_outcome := 'granted';
                            ELSE
                                v_outcome := 'not-granted';
                            END IF;
                        END IF;
                    ELSIF p_intent = 'renew' THEN
                        UPDATE "\(s)".leases SET expires_at = v_now + p_ttl
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation AND token = p_token;
                        v_outcome := CASE WHEN FOUND THEN 'renewed' ELSE 'lost' END;
                    ELSIF p_intent = 'release' THEN
                        UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation AND token = p_token;
                        IF FOUND THEN PERFORM pg_notify('\(channel(schema: s))', p_group); END IF;
                        v_outcome := 'released';
                    END IF;
                END IF;
                RETURN jsonb_build_object('outcome', v_outcome, 'token', v_token, 'view', "\(s)".understudy_view(p_group, v_now));
            END
            $fn$;

            -- One heartbeat of a batch, as the batch carries it.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_batch_item(p_item jsonb, p_now bigint) RETURNS jsonb
            LANGUAGE sql AS $fn$
                SELECT "\(s)".understudy_heartbeat(
                    p_item ->> 'group', (p_item ->> 'goal')::int, (p_item ->> 'ttl')::bigint,
                    p_item ->> 'member', p_item ->> 'incarnation', (p_item ->> 'weight')::int,
                    p_item ->> 'host', (p_item ->> 'pid')::int, p_item ->> 'phase', p_item ->> 'intent',
                    (p_item ->> 'token')::bigint, (p_item ->> 'sent')::bigint, (p_item ->> 'seen')::bigint, p_now
                )
            $fn$;

            CREATE OR REPLACE FUNCTION "\(s)".understudy_heartbeats(p_batch jsonb, p_now bigint, p_isolate boolean)
            RETURNS jsonb LANGUAGE plpgsql AS $fn$
            DECLARE
                v_item jsonb;
                v_result jsonb;
                -- An array, not a jsonb value grown with ||: each || copies the whole value, which made a batch of
                -- 1,000 heartbeats take seconds (quadratic); array_append on a PL/pgSQL variable is amortized O(1).
                v_results jsonb[] := '{}';
            BEGIN
                FOR v_item IN
                    SELECT x.value FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS x (value, n)
                    ORDER BY x.value ->> 'group', x.n
                LOOP
                    IF p_isolate THEN
                        -- A subtransaction per heartbeat, so an error fails only its own heartbeat. It costs about
                        -- two thirds of the batch's time, so the client asks for it only after a batch failed.
                        BEGIN
                            v_result := "\(s)".understudy_batch_item(v_item, p_now);
                        EXCEPTION WHEN OTHERS THEN
                            v_result := jsonb_build_object('error', SQLERRM);
                        END;
                    ELSE
                        v_result := "\(s)".understudy_batch_item(v_item, p_now);
                    END IF;
                    v_results := array_append(v_results, jsonb_build_object('i', v_item -> 'i', 'result', v_result));
                END LOOP;
                RETURN to_jsonb(v_results);
            END
            $fn$;

            -- What members of earlier builds call, so they keep working during a rolling upgrade.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_heartbeats(p_batch jsonb, p_now bigint) RETURNS jsonb
            LANGUAGE sql AS $fn$ SELECT "\(s)".understudy_heartbeats(p_batch, p_now, true) $fn$;
        END
        $do$;
        """
    }
}
