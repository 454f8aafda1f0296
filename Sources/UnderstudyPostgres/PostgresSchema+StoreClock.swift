// The store clock and the record's history: what leases are judged on (docs/design.md, "Clocks").

extension PostgresSchema {
    /// The server's wall clock and the identity of the record the rows belong to.
    static func historyFunctions(schema s: String) -> String {
        """
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
        """
    }

    /// The store clock of each group: how a heartbeat advances it, and what a reader sees.
    static func storeClockFunctions(schema s: String) -> String {
        """
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
        """
    }
}
