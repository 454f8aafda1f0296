import Foundation
import Understudy
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore

/// Every capability the CLI uses of a store; SQLite and PostgreSQL have them all.
typealias CommandStore = CoordinationStore & PartitionLeaseStore & JobQueueStore & CheckpointStore

/// Where the members of a group meet: `--store URL`, else `UNDERSTUDY_STORE`, else the embedded SQLite database.
enum StoreLocation: CustomStringConvertible {
    case sqlite(path: String)
    case postgres(PostgresLocation, url: String)

    /// The schemes `--store` accepts, for error messages and help.
    static let supportedSchemes = "sqlite:///path/to.db (or a bare path), postgres://user:password@host:5432/database"

    /// Reads `text`, else `UNDERSTUDY_STORE`, else the default database.
    ///
    /// Anything that looks like a URL but is not a supported one is refused rather than taken for a file name:
    /// `postgres:/app@db/app` (one slash) as a SQLite file would make every host its own active.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/unknownStoreScheme`` for an unknown or malformed scheme.
    static func parse(_ text: String?) throws(CLIError) -> StoreLocation {
        let text = text ?? ProcessInfo.processInfo.environment["UNDERSTUDY_STORE"].flatMap { $0.isEmpty ? nil : $0 }
        guard let text else { return .sqlite(path: SQLiteStore.defaultPath) }
        guard let separator = text.range(of: "://") else {
            guard !text.isEmpty else { throw CLIError(.storeUnavailable, "the store path is empty") }
            if let problem = urlLikeProblem(text) {
                throw CLIError(.unknownStoreScheme, "the store \"\(redact(text))\" \(problem); supported: \(supportedSchemes)")
            }
            let path = text.hasPrefix("/") ? text : FileManager.default.currentDirectoryPath + "/" + text
            return .sqlite(path: (path as NSString).standardizingPath)
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let rest = String(text[separator.upperBound...])
        switch scheme {
        case "sqlite":
            guard rest.hasPrefix("/") else {
                throw CLIError(
                    .unknownStoreScheme,
                    "the store URL \(redact(text)) has no absolute path: use sqlite:///absolute/path.db, or a bare path"
                )
            }
            return .sqlite(path: rest)
        case "postgres", "postgresql":
            do {
                return .postgres(try PostgresLocation(text), url: text)
            } catch {
                throw CLIError(.storeUnavailable, "\(error)")
            }
        default:
            throw CLIError(
                .unknownStoreScheme,
                "unknown store scheme \"\(scheme)\" in \(redact(text)): supported: \(supportedSchemes)"
            )
        }
    }

    /// Why a store given without `://` cannot be taken for a file path, or `nil` when it can: it starts like a
    /// URL (`scheme:`), or it names a user at a host. Write `./name` for a file whose name looks like that.
    private static func urlLikeProblem(_ text: String) -> String? {
        if text.hasPrefix("/") || text.hasPrefix("./") || text.hasPrefix("../") { return nil }
        if let colon = text.firstIndex(of: ":") {
            let scheme = text[..<colon]
            if let first = scheme.first, first.isLetter, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) {
                let known = ["postgres", "postgresql", "sqlite"].contains(scheme.lowercased())
                return known
                    ? "looks like a \(scheme.lowercased()) URL but lacks \"://\": write \(scheme.lowercased())://…"
                    : "looks like a URL with the unknown scheme \"\(scheme)\" (for a file of that name write ./\(scheme):…)"
            }
        }
        if text.contains("@") {
            return "looks like user@host, not a file: write postgres://user@host:5432/database (or ./name for a file)"
        }
        return nil
    }

    /// `text` with whatever stands between a user name and `@` masked, whether or not it parses as a URL.
    static func redact(_ text: String) -> String {
        guard let at = text.lastIndex(of: "@") else { return text }
        let start = text.range(of: "://")?.upperBound ?? text.startIndex
        guard start < at, let colon = text[start..<at].lastIndex(of: ":") else { return text }
        return text.replacingCharacters(in: text.index(after: colon)..<at, with: "***")
    }

    var description: String {
        switch self {
        case .sqlite(let path): "sqlite://\(path)"
        case .postgres(let location, _): location.description
        }
    }

    /// Opens the store for a member, creating it if needed, and checks that it can be written.
    ///
    /// - Parameter batchWindow: how long a heartbeat waits for others of this process to share its round trip.
    /// - Throws: ``CLIError`` with ``ExitStatus/storeUnavailable``.
    func openForWriting(batchWindow: Duration = .zero) async throws(CLIError) -> any CommandStore {
        switch self {
        case .postgres:
            return try await openPostgres(failingWith: .storeUnavailable, batchWindow: batchWindow)
        case .sqlite(let path):
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                throw CLIError(.storeUnavailable, "the store path \(path) is a directory: give the path of a database file")
            }
            let store: SQLiteStore
            do {
                store = try SQLiteStore(path: path, batchWindow: batchWindow)
            } catch {
                throw CLIError(.storeUnavailable, "the store is not usable: \(error)")
            }
            guard access(path, W_OK) == 0, access((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent, W_OK) == 0 else {
                throw CLIError(.storeUnavailable, "the store \(path) is not writable: fix its permissions or choose another path")
            }
            return store
        }
    }

    /// Opens an existing store for reading: nothing is created, migrated or expired.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/statusError``.
    func openForReading() async throws(CLIError) -> any CommandStore {
        switch self {
        case .postgres:
            return try await openPostgres(failingWith: .statusError)
        case .sqlite(let path):
            guard FileManager.default.fileExists(atPath: path) else {
                throw CLIError(.statusError, "no store at \(path): start a member with `understudy run` first, or pass --store")
            }
            do {
                return try SQLiteStore(path: path, readOnly: true)
            } catch {
                throw CLIError(.statusError, "the store is not usable: \(error)")
            }
        }
    }

    private func openPostgres(failingWith status: ExitStatus, batchWindow: Duration = .zero) async throws(CLIError) -> any CommandStore {
        guard case .postgres(let location, _) = self else { throw CLIError(status, "not a PostgreSQL store: \(self)") }
        do {
            return try await PostgresStore(location: location, batchWindow: batchWindow)
        } catch {
            throw CLIError(status, "the store is not usable: \(error)")
        }
    }
}
