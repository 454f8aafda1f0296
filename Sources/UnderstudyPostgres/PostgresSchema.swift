/// The SQL that creates and migrates Understudy's schema in PostgreSQL, and the functions that apply
/// heartbeats on the server, in one round trip.
///
/// The SQL of each capability is in a file of its own, and this file puts them together in one `DO` block:
/// - `PostgresSchema+Leases.swift`: `understudy_heartbeat` implements exactly the rules of
///   `GroupLedger.apply(_:at:)` (the conformance suites and a differential test run it against the ledger);
///   `understudy_heartbeats` applies a batch in group-name order (so concurrent batches lock groups in the same
///   order and cannot deadlock), with `p_isolate` each heartbeat in its own subtransaction, so one bad row fails
///   only its own heartbeat;
/// - `PostgresSchema+Partitions.swift`: `understudy_partition_heartbeat`, the rules of `GroupLedger.apply(_:at:)`
///   for a `PartitionHeartbeat`, sharing the prologue of `understudy_heartbeat` (`understudy_admit`); a group is
///   partitioned or not (`groups.partitioned`, additive), and each kind of heartbeat refuses a group of the other
///   kind while it has live members;
/// - `PostgresSchema+StoreClock.swift`: the store clock and the record's history;
/// - `PostgresSchema+Directory.swift`: a group's view;
/// - `PostgresSchema+Queue.swift`: the work queues (`JobQueueStore`), with the rules of `JobQueueLedger`; their
///   tables are additive, so they need no new schema version.
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
        channel(prefix: "understudy_", schema: schema)
    }

    /// `prefix` and `schema`, shortened with a hash of the whole schema name when longer than 63 bytes.
    static func channel(prefix: String, schema: String) -> String {
        let plain = prefix + schema
        guard plain.utf8.count > 63 else { return plain }
        let hash = schema.utf8.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        let hex = String(hash, radix: 16)
        return "\(prefix)\(schema.prefix(32))_\(String(repeating: "0", count: 16 - hex.count))\(hex)"
    }

    /// One `DO` block, serialized by an advisory lock, that creates, checks or migrates the schema and (re)defines
    /// the functions. `schema` MUST already be validated as a plain identifier.
    static func migration(schema s: String) -> String {
        [
            tablesAndVersion(schema: s),
            historyFunctions(schema: s),
            migrationFromVersion1(schema: s),
            refusedHeartbeatColumns(schema: s),
            partitionedGroupsColumn(schema: s),
            storeClockFunctions(schema: s),
            directoryFunctions(schema: s),
            leaseFunctions(schema: s),
            partitionFunctions(schema: s),
            queueTables(schema: s),
            queueFunctions(schema: s),
            checkpointTableAndFunctions(schema: s),
            """
            -- Functions of development builds that no client calls any more.
            DROP FUNCTION IF EXISTS "\(s)".understudy_heartbeats(jsonb, bigint);
            DROP FUNCTION IF EXISTS "\(s)".understudy_now();
        END
        $do$;
        """,
        ].joined(separator: "\n\n")
    }

    /// The start of the `DO` block: the lock, the version check, and the tables of a new schema.
    private static func tablesAndVersion(schema s: String) -> String {
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
        """
    }

    /// The newest heartbeat refused because another incarnation holds the id: a waiting member's evidence for the
    /// store clock. Additive, so schemas of version 2 get it without a new version; checked first (in the catalog,
    /// not the slow `information_schema`: every store open runs this, the watchdog's one-shot release too) so that
    /// opening a store does not lock the table.
    private static func refusedHeartbeatColumns(schema s: String) -> String {
        """
            IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = '"\(s)".members'::regclass AND attname = 'refused_sent' AND NOT attisdropped) THEN
                ALTER TABLE "\(s)".members ADD COLUMN refused_incarnation text, ADD COLUMN refused_at bigint,
                    ADD COLUMN refused_sent bigint;
            END IF;
        """
    }

    /// Version 1 stores (development builds) gain the columns of version 2.
    private static func migrationFromVersion1(schema s: String) -> String {
        """
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
        """
    }
}
