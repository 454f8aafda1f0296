extension PostgresSchema {
    /// The groups' fenced checkpoints: `CheckpointRule` in SQL, applied under the group's row lock (the lock every
    /// heartbeat of the group takes), so the check of the writer's lease and the write are one atomic step.
    ///
    /// The lease is judged on the group's store clock as a reader sees it (`understudy_group_now`): if the server's
    /// wall clock steps forward between heartbeats, a valid lease can look expired and its write is refused (safe);
    /// if it steps back, an expired lease that no one was granted since can still write, and only until a newer
    /// token writes or takes the slot (a write is never accepted over a newer token). Additive: a version-2 schema
    /// gains the table without a new version.
    static func checkpointTableAndFunctions(schema s: String) -> String {
        """
            CREATE TABLE IF NOT EXISTS "\(s)".checkpoints (
                group_name text NOT NULL,
                name text NOT NULL,
                value bytea NOT NULL,
                token bigint NOT NULL,
                version bigint NOT NULL,
                PRIMARY KEY (group_name, name)
            );

            -- Outcome: accepted (the new version), superseded (the newer token that wrote), or not_held.
            CREATE OR REPLACE FUNCTION "\(s)".understudy_write_checkpoint(
                p_group text, p_name text, p_value bytea, p_token bigint, p_now bigint
            ) RETURNS TABLE (o_outcome text, o_token bigint, o_version bigint) LANGUAGE plpgsql AS $fn$
            DECLARE
                v_now bigint;
                v_token bigint;
                v_version bigint;
            BEGIN
                PERFORM 1 FROM "\(s)".groups WHERE name = p_group FOR UPDATE;
                IF NOT FOUND THEN
                    RETURN QUERY SELECT 'not_held'::text, p_token, 0::bigint;
                    RETURN;
                END IF;
                v_now := coalesce(p_now, "\(s)".understudy_group_now(p_group));
                SELECT c.token, c.version INTO v_token, v_version FROM "\(s)".checkpoints c
                    WHERE c.group_name = p_group AND c.name = p_name FOR UPDATE;
                IF v_token IS NOT NULL AND v_token > p_token THEN
                    RETURN QUERY SELECT 'superseded'::text, v_token, v_version;
                    RETURN;
                END IF;
                IF NOT EXISTS (SELECT 1 FROM "\(s)".leases l
                        WHERE l.group_name = p_group AND l.token = p_token AND l.holder IS NOT NULL AND l.expires_at > v_now) THEN
                    RETURN QUERY SELECT 'not_held'::text, p_token, coalesce(v_version, 0);
                    RETURN;
                END IF;
                INSERT INTO "\(s)".checkpoints AS c (group_name, name, value, token, version)
                    VALUES (p_group, p_name, p_value, p_token, 1)
                    ON CONFLICT (group_name, name) DO UPDATE
                        SET value = excluded.value, token = excluded.token, version = c.version + 1
                    RETURNING c.version INTO v_version;
                RETURN QUERY SELECT 'accepted'::text, p_token, v_version;
            END
            $fn$;
        """
    }
}
