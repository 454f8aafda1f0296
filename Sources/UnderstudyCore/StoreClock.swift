/// A store's clock for one group, kept on a wall clock that may step (NTP, a VM migration, a failover to a server
/// whose clock differs), and the rule by which each heartbeat advances it. Leases are judged on it.
///
/// At each heartbeat it advances by the wall clock's delta since its previous advance, never backwards, and no
/// further than the heartbeating member measured on its own monotonic clock since its previous heartbeat, plus
/// ``slack``: at most to `previous.appliedAt + (sentAt − previous.sentAt) + slack`. Without such a measurement (the
/// first heartbeat of an incarnation, a previous one sent more than T earlier, or a send instant that went back),
/// it advances by at most the slack. A heartbeat with no send instant (a client of version 1) is bounded by the
/// wall clock alone.
///
/// PostgreSQL's `understudy_advance` computes exactly this, in microseconds, on `groups.store_now`; a differential
/// test ties the two. A forward step thus moves the clock ahead of real time by at most the slack plus how much
/// longer the member's previous heartbeat took to be applied than this one; a backward step makes it stand still.
public struct StoreClock: Hashable, Sendable {
    /// How far the clock may run ahead of what a member measured between two of its heartbeats: the variation in
    /// how long heartbeats take from being sent to being applied that is still taken as real time.
    public static let slack = Duration.milliseconds(25)

    /// The member's previous heartbeat of the same incarnation, as the store recorded it.
    public struct PreviousHeartbeat: Hashable, Sendable {
        /// When the store applied it, on this clock.
        public var appliedAt: Instant
        /// When the member sent it, on the member's own clock.
        public var sentAt: Instant

        public init(appliedAt: Instant, sentAt: Instant) {
            self.appliedAt = appliedAt
            self.sentAt = sentAt
        }
    }

    /// The store time of the newest advance.
    public private(set) var now: Instant
    /// The wall clock's reading at the newest advance.
    public private(set) var wallAt: Instant

    /// A clock that reads `now` while the wall clock reads `wall`.
    public init(now: Instant, wall: Instant) {
        self.now = now
        self.wallAt = wall
    }

    /// Advances the clock for a heartbeat applied while the wall clock reads `wall`, and returns the store time to
    /// judge it on.
    ///
    /// - Parameters:
    ///   - sentAt: when the member sent this heartbeat, on its own clock; `nil` if it does not say.
    ///   - previous: its previous heartbeat, only if that was of the same incarnation and its send instant is known.
    ///   - activationInterval: T of the heartbeat: a measurement over a longer span is not taken as evidence.
    public mutating func advance(
        wall: Instant,
        sentAt: Instant?,
        previous: PreviousHeartbeat?,
        activationInterval: Duration
    ) -> Instant {
        let byWall = now + max(wall - wallAt, .zero)
        let byMember: Instant? = if let sentAt {
            if let previous, sentAt >= previous.sentAt, sentAt - previous.sentAt <= activationInterval {
                previous.appliedAt + (sentAt - previous.sentAt) + Self.slack
            } else {
                now + Self.slack
            }
        } else {
            nil
        }
        now = max(now, min(byWall, byMember ?? byWall))
        wallAt = wall
        return now
    }
}
