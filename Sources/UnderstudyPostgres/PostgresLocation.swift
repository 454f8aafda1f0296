import Foundation
import NIOSSL
import PostgresNIO
import UnderstudyStore

/// A PostgreSQL store's address: `postgres://user:password@host:port/database?schema=NAME&sslmode=MODE`.
///
/// Its `description` never shows the password.
public struct PostgresLocation: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String?
    /// The schema holding Understudy's tables (default `understudy`): a plain identifier.
    public var schema: String
    /// `disable`, `prefer` (default), `require` (encrypted, certificate not checked), `verify-ca` or
    /// `verify-full`, as in libpq.
    public var sslMode: String

    /// Parses a `postgres://` or `postgresql://` URL; throws ``StoreError`` naming what is wrong.
    public init(_ url: String) throws {
        guard let components = URLComponents(string: url), let scheme = components.scheme,
              ["postgres", "postgresql"].contains(scheme.lowercased())
        else {
            throw StoreError(.invalidLocation, "invalid PostgreSQL URL \(Self.redact(url)): expected postgres://user:password@host:5432/database")
        }
        guard let host = components.host, !host.isEmpty else {
            throw StoreError(.invalidLocation, "PostgreSQL URL \(Self.redact(url)) has no host")
        }
        guard let user = components.user, !user.isEmpty else {
            throw StoreError(.invalidLocation, "PostgreSQL URL \(Self.redact(url)) has no user name")
        }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { _, last in last })
        let schema = query["schema"] ?? "understudy"
        guard Self.isPlainIdentifier(schema) else {
            throw StoreError(.invalidLocation, "invalid schema \"\(schema)\": use 1 to 63 of a-z 0-9 _, starting with a letter or _")
        }
        let sslMode = query["sslmode"] ?? "prefer"
        guard ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"].contains(sslMode) else {
            throw StoreError(.invalidLocation, "invalid sslmode \"\(sslMode)\": use disable, prefer, require, verify-ca or verify-full")
        }
        self.host = host
        self.port = components.port ?? 5432
        self.user = user.removingPercentEncoding ?? user
        self.password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        self.database = path.isEmpty ? nil : path
        self.schema = schema
        self.sslMode = sslMode
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        let credentials = password == nil ? user : "\(user):***"
        return "postgres://\(credentials)@\(host):\(port)/\(database ?? "")?schema=\(schema)"
    }

    var tls: PostgresClient.Configuration.TLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case "disable":
            return .disable
        case "require":
            configuration.certificateVerification = .none
            return .require(configuration)
        case "verify-ca":
            configuration.certificateVerification = .noHostnameVerification
            return .require(configuration)
        case "verify-full":
            return .require(configuration)
        default:
            configuration.certificateVerification = .none
            return .prefer(configuration)
        }
    }

    /// `url` with any password replaced by `***`, for messages about a URL that could not be parsed.
    public static func redact(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@"), let schemeEnd = url.range(of: "://")?.upperBound, schemeEnd < at else { return url }
        let credentials = url[schemeEnd..<at]
        guard let colon = credentials.firstIndex(of: ":") else { return url }
        return url.replacingCharacters(in: url.index(after: colon)..<at, with: "***")
    }

    private static func isPlainIdentifier(_ text: String) -> Bool {
        guard let first = text.first, text.count <= 63, first == "_" || ("a"..."z").contains(first) else { return false }
        return text.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) }
    }
}
