// The lease capability: one heartbeat, with the rules of `GroupLedger.apply(_:at:)`, and batches of them.

extension PostgresSchema {
    /// `understudy_heartbeat`, and `understudy_heartbeats` for a batch in group-name order; `understudy_admit` and
    /// `understudy_record_member`, which partition heartbeats (`PostgresSchema+Partitions.swift`) share.
    static func leaseFunctions(schema s: String) -> String {
        """
            -- What every heartbeat of a group does first but the short path: under the group's row lock (its row
            -- created if missing), the store clock advanced by the member's evidence, the record's history (identity,
            -- tokens seen), expired rows removed, the member id and the group's shape checked — p_size slots, or
            -- partitions when p_partitioned — and the group reshaped by its first or only member. o_rejection: the
            -- reply when the heartbeat is refused; o_wall: the server's wall clock, the token floor.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_admit(
                p_group text, p_size int, p_partitioned boolean, p_ttl bigint, p_member text, p_incarnation text,
                p_sent bigint, p_seen bigint, p_now bigint, OUT o_now bigint, OUT o_wall bigint, OUT o_rejection jsonb
            ) LANGUAGE plpgsql AS $fn$
            DECLARE
                g "\(s)".groups%ROWTYPE;
                e "\(s)".members%ROWTYPE;
                v_identity text;
                v_complete_wall bigint;
            BEGIN
                v_identity := "\(s)".understudy_identity();
                IF NOT EXISTS (SELECT 1 FROM "\(s)".groups WHERE name = p_group) THEN
                    -- A group without a row may have lost it (a dropped schema, a restore): its record is complete
                    -- from now, less the time for which the schema's record has been complete.
                    o_wall := "\(s)".understudy_wall();
                    SELECT value::bigint INTO v_complete_wall FROM "\(s)".understudy_meta WHERE key = 'complete_wall';
                    INSERT INTO "\(s)".groups
                        (name, active_goal, last_token, next_join, store_now, wall_at, complete_since, identity)
                        VALUES (p_group, p_size, 0, 1, coalesce(p_now, o_wall), o_wall,
                            coalesce(p_now, o_wall) - least(greatest(o_wall - v_complete_wall, 0), p_ttl), v_identity)
                        ON CONFLICT (name) DO NOTHING;
                END IF;
                -- Every heartbeat of a group takes this row lock: they apply one after another.
                SELECT * INTO g FROM "\(s)".groups WHERE name = p_group FOR UPDATE;
                SELECT * INTO e FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member;
                o_wall := "\(s)".understudy_wall();
                IF e.incarnation = p_incarnation THEN
                    o_now := coalesce(p_now, "\(s)".understudy_advance(
                        g.store_now, g.wall_at, o_wall, e.heartbeat_at, e.sent_at, p_sent, p_ttl));
                ELSIF e.refused_incarnation = p_incarnation THEN
                    o_now := coalesce(p_now, "\(s)".understudy_advance(
                        g.store_now, g.wall_at, o_wall, e.refused_at, e.refused_sent, p_sent, p_ttl));
                ELSE
                    o_now := coalesce(p_now, "\(s)".understudy_advance(g.store_now, g.wall_at, o_wall, NULL, NULL, p_sent, p_ttl));
                END IF;
                IF g.identity IS DISTINCT FROM v_identity THEN
                    -- Another server or another copy of the schema: leases it lost may still run.
                    g.complete_since := o_now;
                END IF;
                IF p_seen > g.last_token THEN
                    -- A client saw a grant this record does not hold: it lost commits (a restore the identity does
                    -- not reveal). Leases it lost may still run; the counter goes on from what was seen.
                    g.complete_since := o_now;
                    g.last_token := p_seen;
                END IF;
                UPDATE "\(s)".groups SET store_now = o_now, wall_at = o_wall, complete_since = g.complete_since,
                    identity = v_identity, last_token = g.last_token WHERE name = p_group;

                DELETE FROM "\(s)".members WHERE group_name = p_group AND expires_at <= o_now;
                UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                    WHERE group_name = p_group AND holder IS NOT NULL AND expires_at <= o_now;

                IF e.expires_at > o_now AND e.incarnation <> p_incarnation THEN
                    -- Its retries measure time too: a group whose members all wait for their ids would otherwise
                    -- move its store clock by the slack only, and the rows they wait for would not expire.
                    UPDATE "\(s)".members SET refused_incarnation = p_incarnation, refused_at = o_now, refused_sent = p_sent
                        WHERE group_name = p_group AND member_id = p_member;
                    o_rejection := jsonb_build_object('rejection', 'member-id-in-use', 'host', e.host, 'pid', e.pid);
                    RETURN;
                END IF;

                IF g.active_goal <> p_size OR g.partitioned <> p_partitioned
                    OR (SELECT count(*) FROM "\(s)".leases WHERE group_name = p_group) <> p_size THEN
                    IF EXISTS (SELECT 1 FROM "\(s)".members WHERE group_name = p_group AND member_id <> p_member)
                        OR EXISTS (SELECT 1 FROM "\(s)".leases WHERE group_name = p_group AND holder IS NOT NULL) THEN
                        o_rejection := CASE WHEN g.partitioned OR p_partitioned
                            THEN jsonb_build_object('rejection', 'partitions-mismatch',
                                'stored', CASE WHEN g.partitioned THEN g.active_goal END)
                            ELSE jsonb_build_object('rejection', 'active-goal-mismatch', 'stored', g.active_goal) END;
                        RETURN;
                    END IF;
                    UPDATE "\(s)".groups SET active_goal = p_size, partitioned = p_partitioned WHERE name = p_group;
                    DELETE FROM "\(s)".leases WHERE group_name = p_group;
                    INSERT INTO "\(s)".leases (group_name, slot) SELECT p_group, slot FROM generate_series(0, p_size - 1) AS slot;
                END IF;
            END
            $fn$;

            -- The heartbeat of a member that understudy_admit admitted and that stays. A joiner takes the next join
            -- sequence (saturating rather than failing on a corrupt counter, as the ledger does) and is announced:
            -- it may outrank an active, or be due partitions, which should hear of it before their next heartbeat.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_record_member(
                p_group text, p_member text, p_incarnation text, p_weight int, p_host text, p_pid int, p_phase text,
                p_now bigint, p_ttl bigint, p_sent bigint
            ) RETURNS void LANGUAGE plpgsql AS $fn$
            DECLARE
                v_join bigint;
            BEGIN
                UPDATE "\(s)".members SET weight = p_weight, host = p_host, pid = p_pid, phase = p_phase,
                        heartbeat_at = p_now, expires_at = p_now + p_ttl, sent_at = p_sent
                    WHERE group_name = p_group AND member_id = p_member;
                IF NOT FOUND THEN
                    SELECT next_join INTO v_join FROM "\(s)".groups WHERE name = p_group;
                    UPDATE "\(s)".groups SET next_join = next_join + 1 WHERE name = p_group AND next_join < 9223372036854775807;
                    INSERT INTO "\(s)".members
                        (group_name, member_id, incarnation, weight, host, pid, join_seq, phase, heartbeat_at, expires_at, sent_at)
                        VALUES (p_group, p_member, p_incarnation, p_weight, p_host, p_pid, v_join, p_phase, p_now, p_now + p_ttl, p_sent);
                    PERFORM pg_notify('\(channel(schema: s))', p_group);
                END IF;
            END
            $fn$;

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
                v_admitted record;
                v_wall bigint;
                v_now bigint;
                v_outcome text := 'none';
                v_token bigint;
                v_slot int;
            BEGIN
                -- The common case, a renewal or a standby's heartbeat from a live member of a group with this goal,
                -- takes a short path. It takes the same group lock first, so heartbeats of a group still apply one
                -- after another. Rows that expired are left to the next heartbeat that takes the full path below;
                -- views and renewals already ignore them. It grants nothing, so it needs no history.
                IF p_intent IN ('renew', 'none') THEN
                    SELECT * INTO g FROM "\(s)".groups
                        WHERE name = p_group AND active_goal = p_goal AND NOT partitioned FOR UPDATE;
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

                SELECT * INTO v_admitted FROM "\(s)".understudy_admit(
                    p_group, p_goal, false, p_ttl, p_member, p_incarnation, p_sent, p_seen, p_now);
                IF v_admitted.o_rejection IS NOT NULL THEN RETURN v_admitted.o_rejection; END IF;
                v_now := v_admitted.o_now;
                SELECT * INTO g FROM "\(s)".groups WHERE name = p_group;

                IF p_intent = 'leave' THEN
                    IF p_token IS NOT NULL THEN
                        UPDATE "\(s)".leases SET holder = NULL, incarnation = NULL, token = NULL, expires_at = NULL
                            WHERE group_name = p_group AND holder = p_member AND incarnation = p_incarnation AND token = p_token;
                        IF FOUND THEN PERFORM pg_notify('\(channel(schema: s))', p_group); END IF;
                    END IF;
                    DELETE FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member;
                    v_outcome := 'left';
                ELSE
                    PERFORM "\(s)".understudy_record_member(
                        p_group, p_member, p_incarnation, p_weight, p_host, p_pid, p_phase, v_now, p_ttl, p_sent);

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
                                v_token := greatest(g.last_token + 1, v_admitted.o_wall);
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
        """
    }
}
