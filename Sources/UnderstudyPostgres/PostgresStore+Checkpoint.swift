import NIOCore
import PostgresNIO
import UnderstudyCore
import UnderstudyStore

/// The fenced checkpoints of a PostgreSQL store: each read or write is one round trip; a write is one call of
/// `understudy_write_checkpoint` (``PostgresSchema/checkpointTableAndFunctions(schema:)``).
extension PostgresStore: CheckpointStore {
    public func checkpoint(of group: GroupName, named name: CheckpointName) async throws -> Checkpoint? {
        let (groupName, checkpointName, location) = (group.rawValue, name.rawValue, location)
        let row = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                """
                SELECT value, token, version FROM "\(unescaped: schema)".checkpoints WHERE group_name = \(groupName) AND name = \(checkpointName)
                """,
                logger: logger
            )
            for try await row in rows.decode((ByteBuffer, Int64, Int64).self) { return Optional(row) }
            return nil
        }
        guard let (value, token, version) = row else { return nil }
        guard token >= 1, version >= 1 else {
            throw StoreError(.corrupt, "checkpoint \"\(name)\" of group \"\(group)\" in \(location) has a corrupt row")
        }
        return Checkpoint(value: Array(buffer: value), token: FencingToken(rawValue: UInt64(token)), version: version)
    }

    public func writeCheckpoint(of group: GroupName, named name: CheckpointName, value: [UInt8], token: FencingToken) async throws -> CheckpointWrite {
        guard value.count <= Checkpoint.maximumSize else { throw CheckpointError.valueTooLarge(value.count) }
        let (groupName, checkpointName, bytes) = (group.rawValue, name.rawValue, ByteBuffer(bytes: value))
        let (tokenValue, now) = (Int64(clamping: token.rawValue), clock.map { $0().nanoseconds / 1_000 })
        let (outcome, writtenToken, version) = try await serverCall { client, schema, logger in
            let rows = try await client.query(
                """
                SELECT o_outcome, o_token, o_version FROM "\(unescaped: schema)".understudy_write_checkpoint(
                    \(groupName), \(checkpointName), \(bytes), \(tokenValue), \(now)::bigint)
                """,
                logger: logger
            )
            for try await row in rows.decode((String, Int64, Int64).self) { return row }
            throw StoreError(.corrupt, "the checkpoint write returned nothing")
        }
        switch outcome {
        case "accepted": return .accepted(Checkpoint(value: value, token: token, version: version))
        case "superseded": return .rejected(.superseded(by: FencingToken(rawValue: UInt64(max(0, writtenToken)))))
        case "not_held": return .rejected(.notHeld(token))
        default: throw StoreError(.corrupt, "the checkpoint write returned \"\(outcome)\"")
        }
    }
}
