/// The simulator's only source of randomness: SplitMix64, seeded once per run.
///
/// Every random choice of a run (latencies, faults, clock drift, work-stop delays) is drawn from one generator in
/// the order the events happen, so one seed gives exactly one schedule.
public struct SimulationRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A value in `range`, uniformly.
    mutating func int(in range: ClosedRange<Int64>) -> Int64 {
        Int64.random(in: range, using: &self)
    }

    /// A duration in `range`, uniformly, to the nanosecond.
    mutating func duration(in range: ClosedRange<Duration>) -> Duration {
        .nanoseconds(int(in: range.lowerBound.nanoseconds...range.upperBound.nanoseconds))
    }

    /// `true` with probability `probability`.
    mutating func chance(_ probability: Double) -> Bool {
        probability > 0 && Double(next() >> 11) * 0x1p-53 < probability
    }

    /// An index in `0..<count`, uniformly.
    mutating func index(below count: Int) -> Int {
        Int.random(in: 0..<count, using: &self)
    }
}
