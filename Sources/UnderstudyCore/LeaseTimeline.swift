/// The deadlines of a lease on its holder's monotonic clock, from `s`, the instant the holder *sent* the newest
/// renewal (or the acquire) that the store confirmed, and the group's heartbeat interval I and activation
/// interval T.
///
/// ```
/// s          s+I        s+T−I         s+T−3I/4          s+T−I/2              s+T
/// |--renew---|--renew---|-------------|-----------------|--------------------|---------------------
///            renew by:  self-fence:   kill deadline:    work deadline:       the store may grant
///            the next   stop acting   SIGKILL the work  the work MUST have   the slot to another
///            renewal    (deactivate)  (supervisor and   stopped (the last    member
///            is sent                  watchdog)         I/2 absorbs a slow
///                                                       holder clock)
/// ```
/// The store's lease runs T from when it *applied* the renewal, which is after `s`; so a holder that hears
/// nothing fences itself at `s + T − I`, a full heartbeat interval before anyone else can be granted its slot
/// (hpcpack step 5a). The work deadline `s + T − I/2` leaves I/2 for the rate difference between the holder's
/// clock and the store's: up to I/(2·T), e.g. 16% with I = 1 s and T = 3 s, since T measured on a slow clock
/// lasts longer than T on the store's. Whatever kills the work does so ``killMargin`` before a deadline it is
/// given, to cover the kill itself.
///
/// A group slot, a partition or a queue claim: every lease held through heartbeats keeps this timeline.
public struct LeaseTimeline: Hashable, Sendable {
    /// `s`: when the newest confirmed renewal (or the grant's acquire) was sent, on the holder's clock.
    public private(set) var confirmedSentAt: Instant
    /// I.
    public let heartbeatInterval: Duration
    /// T.
    public let activationInterval: Duration

    public init(confirmedSentAt: Instant, heartbeatInterval: Duration, activationInterval: Duration) {
        self.confirmedSentAt = confirmedSentAt
        self.heartbeatInterval = heartbeatInterval
        self.activationInterval = activationInterval
    }

    /// The timeline of a lease of `configuration`'s group, granted or last renewed by a heartbeat sent at `sentAt`.
    public init(confirmedSentAt sentAt: Instant, configuration: GroupConfiguration) {
        self.init(confirmedSentAt: sentAt, heartbeatInterval: configuration.heartbeatInterval, activationInterval: configuration.activationInterval)
    }

    /// The store confirmed a renewal sent at `sentAt`: the timeline moves on, never back (answers may come out of
    /// order).
    public mutating func confirm(sentAt: Instant) {
        confirmedSentAt = max(confirmedSentAt, sentAt)
    }

    /// `s + I`: the next renewal is due, so that the gap between renewals never exceeds I.
    public var renewBy: Instant { confirmedSentAt + heartbeatInterval }

    /// `s + T − I`: with no renewal confirmed since, the holder stops acting (self-fences).
    public var selfFence: Instant { confirmedSentAt + (activationInterval - heartbeatInterval) }

    /// `s + T − I/2`: the work MUST have stopped by then (``MemberStateMachine/Action/stopWorkBy(_:)``); until then
    /// it is vouched for even if the holder freezes (``MemberStateMachine/Action/leaseValid(until:)``).
    public var workDeadline: Instant { confirmedSentAt + (activationInterval - heartbeatInterval / 2) }

    /// `s + T − 3I/4`: the work deadline less ``killMargin``, when a supervisor or watchdog sends SIGKILL.
    public var killDeadline: Instant { workDeadline - killMargin }

    /// `s + T`: from then on the store may grant the slot to another member; a release not confirmed by then is
    /// moot.
    public var expiry: Instant { confirmedSentAt + activationInterval }

    /// I/4: how long before a deadline it is given a supervisor or watchdog kills the work, to cover the kill
    /// itself and its proof.
    public var killMargin: Duration { heartbeatInterval / 4 }
}
