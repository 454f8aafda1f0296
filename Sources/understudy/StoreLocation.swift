import Foundation
import Understudy
import UnderstudyPostgres

/// Where the members of a group meet: `--store URL`, else `UNDERSTUDY_STORE`, else the embedded SQLite database.
enum StoreLocation: CustomStringConvertible {
    case sqlite(path: String)
    case postgres(PostgresLocation, url: String)

    /// The schemes `--store` accepts, for error messages and help.
    static let supportedSchemes = "sqlite:///path/to.db (or a bare path), postgres://user:password@host:5432/database"

    /// Reads `text`, else `UNDERSTUDY_STORE`, else the default database.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/unknownStoreScheme`` for a scheme other than `sqlite`.
    static func parse(_ text: String?) throws(CLIError) -> StoreLocation {
        let text = text ?? ProcessInfo.processInfo.environment["UNDERSTUDY_STORE"].flatMap { $0.isEmpty ? nil : $0 }
        guard let text else { return .sqlite(path: SQLiteStore.defaultPath) }
        guard let separator = text.range(of: "://") else {
            guard !text.isEmpty else { throw CLIError(.storeUnavailable, "the store path is empty") }
            return .sqlite(path: text)
        }
        let scheme = text[..<separator.lowerBound].lowercased()
        let rest = String(text[separator.upperBound...])
        switch scheme {
        case "sqlite":
            guard !rest.isEmpty else { throw CLIError(.storeUnavailable, "the store URL \(text) has no path: use \(supportedSchemes)") }
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
                "unknown store scheme \"\(scheme)\" in \(PostgresLocation.redact(text)): supported: \(supportedSchemes)"
            )
        }
    }

    var description: String {
        switch self {
        case .sqlite(let path): "sqlite://\(path)"
        case .postgres(let location, _): location.description
        }
    }

    /// Opens the store for a member, creating it if needed, and checks that it can be written.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/storeUnavailable``.
    func openForWriting() async throws(CLIError) -> any CoordinationStore {
        switch self {
        case .postgres:
            return try await openPostgres(failingWith: .storeUnavailable)
        case .sqlite(let path):
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                throw CLIError(.storeUnavailable, "the store path \(path) is a directory: give the path of a database file")
            }
            let store: SQLiteStore
            do {
                store = try SQLiteStore(path: path)
            } catch {
                throw CLIError(.storeUnavailable, "the store is not usable: \(error)")
            }
            guard access(path, W_OK) == 0, access((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent, W_OK) == 0 else {
                throw CLIError(.storeUnavailable, "the store \(path) is not writable: fix its permissions or choose another path")
            }
            return store
        }
    }

    /// Opens an existing store for reading, without creating it.
    ///
    /// - Throws: ``CLIError`` with ``ExitStatus/statusError``.
    func openForReading() async throws(CLIError) -> any CoordinationStore {
        switch self {
        case .postgres:
            return try await openPostgres(failingWith: .statusError)
        case .sqlite(let path):
            guard FileManager.default.fileExists(atPath: path) else {
                throw CLIError(.statusError, "no store at \(path): start a member with `understudy run` first, or pass --store")
            }
            do {
                return try SQLiteStore(path: path)
            } catch {
                throw CLIError(.statusError, "the store is not usable: \(error)")
            }
        }
    }

    private func openPostgres(failingWith status: ExitStatus) async throws(CLIError) -> any CoordinationStore {
        guard case .postgres(_, let url) = self else { throw CLIError(status, "not a PostgreSQL store: \(self)") }
        do {
            return try await PostgresStore(url: url)
        } catch {
            throw CLIError(status, "the store is not usable: \(error)")
        }
    }
}
