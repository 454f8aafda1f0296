/// A point on a monotonic timeline, counted in nanoseconds from an origin chosen by whoever drives the core.
///
/// The core never reads a clock. The runtime passes instants from the host's monotonic clock, the simulator
/// passes instants from its virtual clock, and tests pass whatever they like.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the origin of the timeline.
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    /// The origin of the timeline.
    public static let zero = Instant(nanoseconds: 0)

    public static func < (lhs: Instant, rhs: Instant) -> Bool {
        lhs.nanoseconds < rhs.nanoseconds
    }

    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &+ rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Duration) -> Instant {
        Instant(nanoseconds: lhs.nanoseconds &- rhs.nanoseconds)
    }

    public static func - (lhs: Instant, rhs: Instant) -> Duration {
        .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds)
    }

    public var description: String {
        Duration.nanoseconds(nanoseconds).formatted
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at the bounds of `Int64`.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }

    /// A compact human form: `150ms`, `2.5s`, `750µs`.
    public var formatted: String {
        let ns = nanoseconds
        let sign = ns < 0 ? "-" : ""
        let magnitude = ns.magnitude
        func scaled(_ unit: UInt64, _ suffix: String) -> String {
            let whole = magnitude / unit
            var fraction = String((magnitude % unit) * 1_000 / unit)
            fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
            while fraction.last == "0" { fraction.removeLast() }
            return sign + String(whole) + (fraction.isEmpty ? "" : "." + fraction) + suffix
        }
        switch magnitude {
        case 0: return "0s"
        case ..<1_000: return sign + String(magnitude) + "ns"
        case ..<1_000_000: return scaled(1_000, "µs")
        case ..<1_000_000_000: return scaled(1_000_000, "ms")
        default: return scaled(1_000_000_000, "s")
        }
    }
}
