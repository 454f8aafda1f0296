import Logging
import NIOCore
import PostgresNIO
import UnderstudyCore
import UnderstudyStore

/// The reference continuity sink: a PostgreSQL table that accepts only the next sequence of each stream and refuses
/// an older epoch. Each batch is one call of `understudy_continuity_append`, which applies ``ContinuitySinkRule``
/// under the stream's row lock, so writers racing on one stream are serialized and each batch is all or nothing.
///
/// Its tables are `continuity_streams` (stream, epoch, position) and `continuity_records` (stream, first, last,
/// epoch, gap, payload) in the URL's schema, which SHOULD be a schema of the sink's own, not a store's.
public final class PostgresContinuitySink: ContinuitySink, CustomStringConvertible {
    /// The stream this sink writes: its identity survives failover, as the group's name does.
    public let stream: String
    private let connection: PostgresConnection

    /// Connects and creates the sink's tables and function if they are missing.
    ///
    /// - Throws: ``StoreError`` when the URL is malformed or the server cannot be reached.
    public init(url: String, stream: String, timeout: Duration = .seconds(5), logger: Logger = Logger(label: "understudy.sink")) async throws {
        let location = try PostgresLocation(url)
        self.stream = stream
        connection = PostgresConnection(location: location, timeout: timeout, logger: logger)
        do {
            try await connection.withPool { [logger = connection.logger] client in
                _ = try await client.query(PostgresQuery(unsafeSQL: Self.schema(location.schema)), logger: logger)
            }
        } catch {
            connection.shutDown()
            throw PostgresConnection.storeError(error, location: location, opening: true)
        }
    }

    deinit { connection.shutDown() }

    public var description: String { "\(connection.location) stream \(stream)" }

    public func append(_ records: [ContinuityRecord], epoch: FencingToken) async throws -> ContinuityAppend {
        var (firsts, lasts, gaps, payloads) = ([Int64](), [Int64](), [Bool](), [ByteBuffer]())
        for record in records {
            firsts.append(record.first)
            lasts.append(record.last)
            switch record {
            case .message(_, let payload):
                gaps.append(false)
                payloads.append(ByteBuffer(bytes: payload))
            case .gap:
                gaps.append(true)
                payloads.append(ByteBuffer())
            }
        }
        let columns = (firsts, lasts, gaps, payloads)
        let (stream, epochValue, schema, location) = (stream, Int64(clamping: epoch.rawValue), connection.location.schema, connection.location)
        let row = try await call { client, logger in
            let rows = try await client.query(
                """
                SELECT o_outcome, o_epoch, o_position, o_duplicates FROM "\(unescaped: schema)".understudy_continuity_append(
                    \(stream), \(epochValue), \(columns.0), \(columns.1), \(columns.2), \(columns.3))
                """,
                logger: logger
            )
            for try await row in rows.decode((String, Int64, Int64, Int32).self) { return row }
            throw StoreError(.corrupt, "the continuity append returned nothing")
        }
        switch row.0 {
        case "accepted": return .accepted(position: row.2, duplicates: Int(row.3))
        case "stale_epoch": return .staleEpoch(current: FencingToken(rawValue: UInt64(max(0, row.1))))
        case "out_of_sequence": return .outOfSequence(position: row.2)
        default: throw StoreError(.corrupt, "the continuity append at \(location) returned \"\(row.0)\"")
        }
    }

    /// The stream's epoch and position at the sink.
    public func position() async throws -> ContinuityStream {
        let (stream, schema) = (stream, connection.location.schema)
        return try await call { client, logger in
            let rows = try await client.query(
                """
                SELECT epoch, position FROM "\(unescaped: schema)".continuity_streams WHERE stream = \(stream)
                """,
                logger: logger
            )
            for try await (epoch, position) in rows.decode((Int64, Int64).self) {
                return ContinuityStream(epoch: FencingToken(rawValue: UInt64(max(0, epoch))), position: position)
            }
            return ContinuityStream()
        }
    }

    /// A record as the sink holds it: what it covers and the epoch that wrote it.
    public struct StoredRecord: Hashable, Sendable {
        public let record: ContinuityRecord
        public let epoch: FencingToken
    }

    /// Up to `limit` records of the stream after sequence `after`, in order.
    public func records(after: Int64, limit: Int = 10_000) async throws -> [StoredRecord] {
        let (stream, schema, limit) = (stream, connection.location.schema, Int64(limit))
        return try await call { client, logger in
            let rows = try await client.query(
                """
                SELECT first, last, epoch, gap, payload FROM "\(unescaped: schema)".continuity_records
                WHERE stream = \(stream) AND first > \(after) ORDER BY first LIMIT \(limit)
                """,
                logger: logger
            )
            var records: [StoredRecord] = []
            for try await (first, last, epoch, gap, payload) in rows.decode((Int64, Int64, Int64, Bool, ByteBuffer).self) {
                let record: ContinuityRecord = gap ? .gap(first: first, count: last - first + 1) : .message(sequence: first, payload: Array(buffer: payload))
                records.append(StoredRecord(record: record, epoch: FencingToken(rawValue: UInt64(max(0, epoch)))))
            }
            return records
        }
    }

    /// Closes every connection.
    public func close() { connection.shutDown() }

    private func call<Value: Sendable>(_ body: @escaping @Sendable (PostgresClient, Logger) async throws -> Value) async throws -> Value {
        let (location, logger) = (connection.location, connection.logger)
        do {
            return try await connection.withPool { client in try await body(client, logger) }
        } catch {
            throw PostgresConnection.storeError(error, location: location, opening: false)
        }
    }

    /// ``ContinuitySinkRule`` in SQL, under the stream's row lock; one `DO` block, under a lock, so processes
    /// starting together do not race on creating it.
    static func schema(_ s: String) -> String {
        """
        DO $do$
        BEGIN
        PERFORM pg_advisory_xact_lock(hashtext('understudy-continuity-sink'), hashtext('\(s)'));
        CREATE SCHEMA IF NOT EXISTS "\(s)";
        CREATE TABLE IF NOT EXISTS "\(s)".continuity_streams (
            stream text PRIMARY KEY,
            epoch bigint NOT NULL,
            position bigint NOT NULL
        );
        CREATE TABLE IF NOT EXISTS "\(s)".continuity_records (
            stream text NOT NULL,
            first bigint NOT NULL,
            last bigint NOT NULL,
            epoch bigint NOT NULL,
            gap boolean NOT NULL,
            payload bytea NOT NULL,
            PRIMARY KEY (stream, first)
        );
        -- Outcome: accepted (the new position, the duplicates skipped), stale_epoch (the newer epoch), or
        -- out_of_sequence (the stream's position); a refused batch writes nothing.
        CREATE OR REPLACE FUNCTION "\(s)".understudy_continuity_append(
            p_stream text, p_epoch bigint, p_first bigint[], p_last bigint[], p_gap boolean[], p_payload bytea[]
        ) RETURNS TABLE (o_outcome text, o_epoch bigint, o_position bigint, o_duplicates integer) LANGUAGE plpgsql AS $fn$
        DECLARE
            v_epoch bigint;
            v_position bigint;
            v_next bigint;
            v_duplicates integer := 0;
        BEGIN
            INSERT INTO "\(s)".continuity_streams (stream, epoch, position) VALUES (p_stream, 0, 0) ON CONFLICT DO NOTHING;
            SELECT epoch, position INTO v_epoch, v_position FROM "\(s)".continuity_streams WHERE stream = p_stream FOR UPDATE;
            IF p_epoch < v_epoch THEN
                RETURN QUERY SELECT 'stale_epoch'::text, v_epoch, v_position, 0;
                RETURN;
            END IF;
            v_next := v_position;
            FOR i IN 1 .. coalesce(array_length(p_first, 1), 0) LOOP
                IF p_last[i] <= v_position AND v_next = v_position THEN
                    v_duplicates := v_duplicates + 1;
                ELSIF p_first[i] <> v_next + 1 OR p_last[i] < p_first[i] THEN
                    RETURN QUERY SELECT 'out_of_sequence'::text, v_epoch, v_position, 0;
                    RETURN;
                ELSE
                    v_next := p_last[i];
                END IF;
            END LOOP;
            INSERT INTO "\(s)".continuity_records (stream, first, last, epoch, gap, payload)
                SELECT p_stream, r.first, r.last, p_epoch, r.gap, r.payload
                FROM unnest(p_first, p_last, p_gap, p_payload) AS r(first, last, gap, payload)
                WHERE r.first > v_position;
            UPDATE "\(s)".continuity_streams SET epoch = p_epoch, position = v_next WHERE stream = p_stream;
            RETURN QUERY SELECT 'accepted'::text, p_epoch, v_next, v_duplicates;
        END
        $fn$;
        END
        $do$;
        """
    }
}
