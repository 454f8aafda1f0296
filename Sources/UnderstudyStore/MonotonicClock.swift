#if os(Linux)
import Glibc
#else
#error("Understudy's clocks are Linux's: CLOCK_BOOTTIME, /proc/sys/kernel/random/boot_id")
#endif
import UnderstudyCore

/// The host's boot-time monotonic clock: shared by every process on the host, unaffected by changes of the
/// wall clock, and (on Linux) still counting while the machine is suspended.
public enum MonotonicClock {
    /// Nanoseconds since boot.
    @Sendable public static func now() -> Instant {
        var spec = timespec()
        clock_gettime(CLOCK_BOOTTIME, &spec)
        return Instant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    /// Microseconds since 1970 on the wall clock: only for fencing-token floors (``StoreMoment/tokenFloor``),
    /// never to judge a lease.
    @Sendable public static func wallMicroseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(max(0, Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000))
    }
}
