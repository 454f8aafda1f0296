#if os(Linux)
import Glibc
#else
#error("Understudy's clocks are Linux's: CLOCK_BOOTTIME, /proc/sys/kernel/random/boot_id")
#endif
import UnderstudyCore

/// The clock a ``SQLiteStore`` judges leases on: the host's boot-time clock as the host's initial time
/// namespace counts it, with what identifies that clock.
///
/// Every process on one host reads the same value, also a process in a time namespace of its own
/// (`unshare --time --boottime`, a CRIU restore), whose offset is taken back out. The clock restarts at a reboot,
/// which ``bootID`` tells apart; another host's clock is another clock altogether, which ``host`` tells apart.
public struct HostClock: Sendable {
    /// Identifies the current boot: instants of different boots cannot be compared.
    public var bootID: String
    /// Identifies the host (its machine id, else its host name), for messages and to tell a reboot of this host
    /// from another host writing the same file.
    public var host: String
    /// The clock.
    public var now: @Sendable () -> Instant
    /// Microseconds since 1970 on the wall clock, for token floors and to order boots; never to judge a lease.
    public var wallMicroseconds: @Sendable () -> UInt64

    public init(
        bootID: String,
        host: String,
        now: @escaping @Sendable () -> Instant,
        wallMicroseconds: @escaping @Sendable () -> UInt64 = MonotonicClock.wallMicroseconds
    ) {
        self.bootID = bootID
        self.host = host
        self.now = now
        self.wallMicroseconds = wallMicroseconds
    }

    /// This host's clock.
    ///
    /// - Throws: ``StoreError`` when the boot id cannot be read (as where systemd's `ProcSubset=pid` hides
    ///   `/proc/sys`): without it a reboot cannot be told from another writer, so no store is opened.
    public static func system() throws(StoreError) -> HostClock {
        guard let bootID = firstLine(of: "/proc/sys/kernel/random/boot_id"), !bootID.isEmpty else {
            throw StoreError(
                .unavailable,
                "cannot read the boot id from /proc/sys/kernel/random/boot_id (is /proc/sys hidden, as by systemd's "
                    + "ProcSubset=pid?): a SQLite store needs it to tell a reboot from another writer"
            )
        }
        let offset = bootTimeNamespaceOffset()
        let host = firstLine(of: "/etc/machine-id").flatMap { $0.isEmpty ? nil : $0 } ?? hostName()
        return HostClock(bootID: bootID, host: host, now: { MonotonicClock.now() - offset })
    }

    /// How far this process's time namespace moves CLOCK_BOOTTIME (`/proc/self/timens_offsets`; zero without
    /// time namespaces).
    static func bootTimeNamespaceOffset() -> Duration {
        guard let file = fopen("/proc/self/timens_offsets", "r") else { return .zero }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 128)
        while fgets(&line, Int32(line.count), file) != nil {
            let fields = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .split(whereSeparator: \.isWhitespace)
            if fields.count == 3, fields[0] == "boottime", let seconds = Int64(fields[1]), let nanoseconds = Int64(fields[2]) {
                return .seconds(seconds) + .nanoseconds(nanoseconds)
            }
        }
        return .zero
    }

    private static func firstLine(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 256)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return text.filter { !$0.isWhitespace }
    }

    private static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "unknown" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
