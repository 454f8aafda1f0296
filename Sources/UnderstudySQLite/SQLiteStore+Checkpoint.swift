import Foundation
import GRDB
import UnderstudyCore
import UnderstudyStore

/// The fenced checkpoints of a SQLite store: ``CheckpointRule`` applied in one `BEGIN IMMEDIATE` transaction with
/// the group's lease rows, on the store's clock.
extension SQLiteStore: CheckpointStore {
    static let checkpointTable = """
        CREATE TABLE checkpoints (
            group_name TEXT NOT NULL,
            name TEXT NOT NULL,
            value BLOB NOT NULL,
            token INTEGER NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (group_name, name)
        ) WITHOUT ROWID
        """

    public func checkpoint(of group: GroupName, named name: CheckpointName) async throws -> Checkpoint? {
        try await database.read(orIfEmpty: nil) { db, _ in
            guard try db.tableExists("checkpoints") else { return nil }
            return try Self.loadCheckpoint(db, group: group, name: name)
        }
    }

    public func writeCheckpoint(of group: GroupName, named name: CheckpointName, value: [UInt8], token: FencingToken) async throws -> CheckpointWrite {
        guard value.count <= Checkpoint.maximumSize else { throw CheckpointError.valueTooLarge(value.count) }
        return try await database.write { db, moment in
            let current = try Self.loadCheckpoint(db, group: group, name: name)
            let write = CheckpointRule.write(value, token: token, over: current, group: try Self.loadLedger(db, group: group), now: moment.now)
            if case .accepted(let checkpoint) = write {
                try db.execute(
                    sql: """
                        INSERT INTO checkpoints (group_name, name, value, token, version) VALUES (?, ?, ?, ?, ?)
                        ON CONFLICT (group_name, name) DO UPDATE SET value = excluded.value, token = excluded.token, version = excluded.version
                        """,
                    arguments: [group.rawValue, name.rawValue, Data(checkpoint.value), Int64(checkpoint.token.rawValue), checkpoint.version]
                )
            }
            return write
        }
    }

    private static func loadCheckpoint(_ db: Database, group: GroupName, name: CheckpointName) throws -> Checkpoint? {
        guard let row = try Row.fetchOne(
            db, sql: "SELECT value, token, version FROM checkpoints WHERE group_name = ? AND name = ?", arguments: [group.rawValue, name.rawValue]
        ) else { return nil }
        guard let value: Data = SQLiteDatabase.column(row, 0), let token: Int64 = SQLiteDatabase.column(row, 1), token >= 1,
              let version: Int64 = SQLiteDatabase.column(row, 2), version >= 1
        else {
            throw StoreError(.corrupt, "checkpoint \"\(name)\" of group \"\(group)\" has a corrupt row: \(row)")
        }
        return Checkpoint(value: Array(value), token: FencingToken(rawValue: UInt64(token)), version: version)
    }
}
