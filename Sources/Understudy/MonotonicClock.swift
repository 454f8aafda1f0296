#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import UnderstudyCore

/// The host's boot-time monotonic clock: shared by every process on the host, unaffected by changes of the
/// wall clock, and (on Linux) still counting while the machine is suspended.
public enum MonotonicClock {
    /// Nanoseconds since boot.
    @Sendable public static func now() -> Instant {
        var spec = timespec()
        #if os(Linux)
        clock_gettime(CLOCK_BOOTTIME, &spec)
        #else
        clock_gettime(CLOCK_MONOTONIC_RAW, &spec)
        #endif
        return Instant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    /// An identifier of the current boot of the host, so a store can tell that rows were written before a
    /// reboot (when the boot-time clock started again from zero). Linux only; elsewhere `"unknown"`.
    public static func bootID() -> String {
        #if os(Linux)
        if let file = fopen("/proc/sys/kernel/random/boot_id", "r") {
            defer { fclose(file) }
            var buffer = [CChar](repeating: 0, count: 64)
            if fgets(&buffer, Int32(buffer.count), file) != nil {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let trimmed = text.filter { !$0.isWhitespace }
                if !trimmed.isEmpty { return trimmed }
            }
        }
        #endif
        return "unknown"
    }
}
