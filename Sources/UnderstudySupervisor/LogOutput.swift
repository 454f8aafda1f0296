import Foundation
import Logging
import Synchronization

/// How `understudy` writes its log lines to stderr.
public enum LogFormat: String, CaseIterable, Sendable {
    /// `2025-01-02T03:04:05.678Z notice activated group=billing member=a token=7`
    case text
    /// One JSON object per line: `{"time":…,"level":…,"message":…,"group":…,"member":…,"token":…}`.
    case json
}

/// A swift-log handler that writes one line per message to stderr, as text or JSON.
public struct LineLogHandler: LogHandler {
    public var format: LogFormat
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]

    private static let output = Mutex(())

    /// Messages of this level are not written (the caller reports them otherwise).
    private let dropped: Logger.Level?

    public init(format: LogFormat, dropping dropped: Logger.Level? = nil) {
        self.format = format
        self.dropped = dropped
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let level = event.level
        guard level != dropped else { return }
        let message = event.message
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        let ordered = Self.order(fields.keys)
        let time = Self.timestamp()
        var line: String
        switch format {
        case .text:
            line = "\(time) \(level) \(message)"
            for key in ordered { line += " \(key)=\(fields[key]!)" }
        case .json:
            line = "{\"time\":\(Self.quote(time)),\"level\":\(Self.quote("\(level)")),\"message\":\(Self.quote("\(message)"))"
            for key in ordered { line += ",\(Self.quote(key)):\(Self.quote("\(fields[key]!)"))" }
            line += "}"
        }
        let bytes = Array((line + "\n").utf8)
        Self.output.withLock { _ in
            _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }

    /// group, member, token and reason first, the rest alphabetically.
    private static func order(_ keys: Dictionary<String, Logger.MetadataValue>.Keys) -> [String] {
        let first = ["group", "member", "token", "reason"]
        return first.filter(keys.contains) + keys.filter { !first.contains($0) }.sorted()
    }

    private static func timestamp() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        var parts = tm()
        var seconds = spec.tv_sec
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
            spec.tv_nsec / 1_000_000
        )
    }

    /// A JSON string literal.
    public static func quote(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
