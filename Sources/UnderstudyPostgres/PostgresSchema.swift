/// The SQL that creates and migrates Understudy's schema in PostgreSQL, and the functions that apply
/// heartbeats on the server, in one round trip, with the server's clock.
///
/// `understudy_heartbeat` implements exactly the rules of `GroupLedger.apply(_:now:)`; the store conformance
/// suite runs against both. `understudy_heartbeats` applies a batch in group-name order (so concurrent batches
/// lock groups in the same order and cannot deadlock); with `p_isolate` each heartbeat runs in its own
/// subtransaction, so one bad row fails only its own heartbeat.
enum PostgresSchema {
    static let version = 1

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

    /// One `DO` block, serialized by an advisory lock, that creates or checks the schema and (re)defines the
    /// functions. `schema` MUST already be validated as a plain identifier.
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
                INSERT INTO "\(s)".understudy_meta (key, value)
                    VALUES ('application', 'understudy'), ('schema_version', '\(version)');
            END IF;

            -- The server's clock, in microseconds.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_now() RETURNS bigint LANGUAGE sql VOLATILE AS
                $fn$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $fn$;

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

            CREATE OR REPLACE FUNCTION "\(s)".understudy_heartbeat(
                p_group text, p_goal int, p_ttl bigint, p_member text, p_incarnation text, p_weight int,
                p_host text, p_pid int, p_phase text, p_intent text, p_token bigint, p_now bigint
            ) RETURNS jsonb LANGUAGE plpgsql AS $fn$
            DECLARE
                g "\(s)".groups%ROWTYPE;
                e "\(s)".members%ROWTYPE;
                v_now bigint;
                v_found boolean;
                v_outcome text := 'none';
                v_token bigint;
                v_slot int;
                v_join bigint;
            BEGIN
                -- The common case, a renewal or a standby's heartbeat from a live member of a group with this goal,
                -- in four statements rather than about ten. It takes the same group lock first, so heartbeats of a
                -- group still apply one after another. Rows that expired are left to the next heartbeat that takes
                -- the full path below; views and renewals already ignore them.
                IF p_intent IN ('renew', 'none') THEN
                    PERFORM 1 FROM "\(s)".groups WHERE name = p_group AND active_goal = p_goal FOR UPDATE;
                    IF FOUND THEN
                        v_now := coalesce(p_now, "\(s)".understudy_now());
                        UPDATE "\(s)".members SET weight = p_weight, host = p_host, pid = p_pid, phase = p_phase,
                                heartbeat_at = v_now, expires_at = v_now + p_ttl
                            WHERE group_name = p_group AND member_id = p_member AND incarnation = p_incarnation
                                AND expires_at > v_now;
                        IF FOUND THEN
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

                INSERT INTO "\(s)".groups (name, active_goal, last_token, next_join) VALUES (p_group, p_goal, 0, 1)
                    ON CONFLICT (name) DO NOTHING;
                -- Every heartbeat of a group takes this row lock: they apply one after another.
                SELECT * INTO g FROM "\(s)".groups WHERE name = p_group FOR UPDATE;
                v_now := coalesce(p_now, "\(s)".understudy_now());

                DELETE FROM "\(s)".members WHERE group_name = p_group AND expires_at <= v_now;
                UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                    WHERE group_name = p_group AND holder IS NOT NULL AND expires_at <= v_now;

                SELECT * INTO e FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member;
                v_found := FOUND;
                IF v_found AND e.incarnation <> p_incarnation THEN
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
                        UPDATE "\(s)".groups SET next_join = next_join + 1 WHERE name = p_group RETURNING next_join - 1 INTO v_join;
                        -- A joiner may outrank an active, which should hear of it before its next heartbeat.
                        PERFORM pg_notify('\(channel(schema: s))', p_group);
                    END IF;
                    INSERT INTO "\(s)".members
                        (group_name, member_id, incarnation, weight, host, pid, join_seq, phase, heartbeat_at, expires_at)
                        VALUES (p_group, p_member, p_incarnation, p_weight, p_host, p_pid, v_join, p_phase, v_now, v_now + p_ttl)
                        ON CONFLICT (group_name, member_id) DO UPDATE SET
                            weight = excluded.weight, host = excluded.host, pid = excluded.pid, phase = excluded.phase,
                            heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at;

                    IF p_intent = 'acquire' THEN
                        UPDATE "\(s)".leases SET expires_at = v_now + p_ttl
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation
                            RETURNING token INTO v_token;
                        IF FOUND THEN
                            v_outcome := 'granted';
                        ELSE
                            SELECT slot INTO v_slot FROM "\(s)".leases
                                WHERE group_name = p_group AND holder IS NULL ORDER BY slot LIMIT 1;
                            IF FOUND THEN
                                UPDATE "\(s)".groups SET last_token = last_token + 1 WHERE name = p_group
                                    RETURNING last_token INTO v_token;
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
                    (p_item ->> 'token')::bigint, p_now
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
