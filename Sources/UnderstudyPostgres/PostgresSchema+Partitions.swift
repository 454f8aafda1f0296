// The partition lease capability: one partition heartbeat, with the rules of `GroupLedger.apply(_:at:)` for a
// `PartitionHeartbeat`.

extension PostgresSchema {
    /// `groups.partitioned`: whether a group's leases are partitions, of which a member may hold several. Additive,
    /// so a version-2 schema gains it without a new version; checked in the catalog first, as
    /// ``refusedHeartbeatColumns(schema:)`` is, so that opening a store does not lock the table.
    static func partitionedGroupsColumn(schema s: String) -> String {
        """
            IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = '"\(s)".groups'::regclass AND attname = 'partitioned' AND NOT attisdropped) THEN
                ALTER TABLE "\(s)".groups ADD COLUMN partitioned boolean NOT NULL DEFAULT false;
            END IF;
        """
    }

    /// `understudy_partition_heartbeat`: a member's membership and its operations on any number of partitions, in
    /// one call.
    ///
    /// Set-based: the operations are cut into runs in which no partition repeats (a single run unless the member
    /// names a partition twice), and each run is one statement that judges every operation against the leases as
    /// the run found them, numbers its grants in operation order and writes what changed. Runs apply one after
    /// another, so a repeated partition sees what the operations before it did, as in the ledger.
    static func partitionFunctions(schema s: String) -> String {
        """
            -- p_kinds, p_indexes, p_tokens: the operations in order ('acquire', 'renew', 'release'; the partition;
            -- the token, 0 for an acquire). The other parameters as for understudy_heartbeat.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_partition_heartbeat(
                p_group text, p_partitions int, p_ttl bigint, p_member text, p_incarnation text, p_weight int,
                p_host text, p_pid int, p_phase text, p_kinds text[], p_indexes int[], p_tokens bigint[],
                p_leaving boolean, p_sent bigint, p_seen bigint, p_now bigint
            ) RETURNS jsonb LANGUAGE plpgsql AS $fn$
            DECLARE
                g "\(s)".groups%ROWTYPE;
                v_admitted record;
                v_now bigint;
                v_grants boolean;
                v_next bigint;
                v_starts int[];
                v_run int;
                v_run_outcomes text[];
                v_run_tokens bigint[];
                v_run_last bigint;
                v_run_freed boolean;
                v_outcomes text[] := '{}';
                v_tokens bigint[] := '{}';
                v_freed boolean := false;
            BEGIN
                SELECT * INTO v_admitted FROM "\(s)".understudy_admit(
                    p_group, p_partitions, true, p_ttl, p_member, p_incarnation, p_sent, p_seen, p_now);
                IF v_admitted.o_rejection IS NOT NULL THEN RETURN v_admitted.o_rejection; END IF;
                v_now := v_admitted.o_now;
                SELECT * INTO g FROM "\(s)".groups WHERE name = p_group;
                IF NOT p_leaving THEN
                    PERFORM "\(s)".understudy_record_member(
                        p_group, p_member, p_incarnation, p_weight, p_host, p_pid, p_phase, v_now, p_ttl, p_sent);
                END IF;
                -- A member that stays, and a record complete for T.
                v_grants := NOT p_leaving AND (g.complete_since IS NULL OR v_now - p_ttl >= g.complete_since);

                -- A run starts at the first operation and at each that names a partition an earlier one named.
                SELECT array_agg(n ORDER BY n) INTO v_starts FROM (
                    SELECT o.n, row_number() OVER (PARTITION BY o.i ORDER BY o.n) AS occurrence
                    FROM unnest(p_indexes) WITH ORDINALITY AS o (i, n)
                ) AS x WHERE n = 1 OR occurrence > 1;
                v_starts := coalesce(v_starts, '{}') || (cardinality(p_kinds) + 1);

                FOR v_run IN 1 .. cardinality(v_starts) - 1 LOOP
                    -- The next grant's token: the next count, or the wall clock in µs if that is larger; none once
                    -- the counter is exhausted (only a corrupt row exhausts it).
                    v_next := CASE WHEN g.last_token < 9223372036854775807 THEN greatest(g.last_token + 1, v_admitted.o_wall) END;
                    WITH op AS (
                        SELECT o.n, o.kind, o.i, o.token FROM unnest(
                            p_kinds[v_starts[v_run]:v_starts[v_run + 1] - 1],
                            p_indexes[v_starts[v_run]:v_starts[v_run + 1] - 1],
                            p_tokens[v_starts[v_run]:v_starts[v_run + 1] - 1]
                        ) WITH ORDINALITY AS o (kind, i, token, n)
                    ), judged AS (
                        -- A partition out of range has no row: neither free nor this member's.
                        SELECT op.n, op.kind, op.i, op.token, l.token AS held,
                            coalesce(l.holder = p_member AND l.incarnation = p_incarnation, false) AS mine,
                            l.slot IS NOT NULL AND l.holder IS NULL AS free
                        FROM op LEFT JOIN "\(s)".leases l ON l.group_name = p_group AND l.slot = op.i
                    ), ranked AS (
                        SELECT judged.*,
                            count(*) FILTER (WHERE kind = 'acquire' AND free) OVER (ORDER BY n) - 1 AS earlier_grants
                        FROM judged
                    ), decided AS (
                        SELECT n, i, CASE
                                WHEN kind = 'acquire' AND mine AND NOT p_leaving THEN 'extend'
                                WHEN kind = 'acquire' AND free AND v_grants AND earlier_grants <= 9223372036854775807 - v_next
                                    THEN 'grant'
                                WHEN kind = 'renew' AND mine AND held = token AND NOT p_leaving THEN 'extend'
                                WHEN kind = 'release' AND mine AND held = token THEN 'free'
                            END AS effect,
                            CASE WHEN kind = 'acquire' AND free THEN v_next + earlier_grants ELSE held END AS granted,
                            kind
                        FROM ranked
                    ), written AS (
                        UPDATE "\(s)".leases l SET
                            holder = CASE d.effect WHEN 'free' THEN NULL ELSE p_member END,
                            incarnation = CASE d.effect WHEN 'free' THEN NULL ELSE p_incarnation END,
                            token = CASE d.effect WHEN 'free' THEN NULL ELSE d.granted END,
                            expires_at = CASE d.effect WHEN 'free' THEN NULL ELSE v_now + p_ttl END
                        FROM decided d
                        WHERE l.group_name = p_group AND l.slot = d.i AND d.effect IS NOT NULL
                    )
                    SELECT
                        array_agg(CASE
                            WHEN kind = 'acquire' THEN CASE WHEN effect IS NULL THEN 'not-granted' ELSE 'granted' END
                            WHEN kind = 'renew' THEN CASE WHEN effect IS NULL THEN 'lost' ELSE 'renewed' END
                            ELSE 'released' END ORDER BY n),
                        array_agg(CASE WHEN kind = 'acquire' AND effect IS NOT NULL THEN granted END ORDER BY n),
                        max(granted) FILTER (WHERE effect = 'grant'),
                        coalesce(bool_or(effect = 'free'), false)
                    INTO v_run_outcomes, v_run_tokens, v_run_last, v_run_freed
                    FROM decided;
                    v_outcomes := v_outcomes || v_run_outcomes;
                    v_tokens := v_tokens || v_run_tokens;
                    g.last_token := greatest(g.last_token, v_run_last);
                    v_freed := v_freed OR v_run_freed;
                END LOOP;

                UPDATE "\(s)".groups SET last_token = g.last_token WHERE name = p_group AND last_token <> g.last_token;
                IF p_leaving THEN DELETE FROM "\(s)".members WHERE group_name = p_group AND member_id = p_member; END IF;
                IF v_freed THEN PERFORM pg_notify('\(channel(schema: s))', p_group); END IF;
                RETURN jsonb_build_object('outcomes', to_jsonb(v_outcomes), 'tokens', to_jsonb(v_tokens), 'left', p_leaving,
                    'view', "\(s)".understudy_view(p_group, v_now));
            END
            $fn$;
        """
    }
}
