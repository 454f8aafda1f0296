import Testing
import UnderstudyCore

/// The store clock on a wall clock that steps (T = 3 s, slack 25 ms). Walls read from an hour after zero, members'
/// clocks from elsewhere: only differences on one clock are ever compared.
@Suite("StoreClock")
struct StoreClockTests {
    let wall = at(.seconds(3_600))
    let activation = Duration.seconds(3)

    /// A member whose previous heartbeat was applied at store time `applied` and sent at `sent` on its clock.
    func previous(applied: Duration, sent: Duration) -> StoreClock.PreviousHeartbeat {
        StoreClock.PreviousHeartbeat(appliedAt: at(applied), sentAt: at(.seconds(50) + sent))
    }

    func sent(_ offset: Duration) -> Instant { at(.seconds(50) + offset) }

    @Test func noStep_advancesByTheWallClock() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        let now = clock.advance(
            wall: wall + .seconds(1), sentAt: sent(.seconds(1)), previous: previous(applied: .seconds(10), sent: .zero),
            activationInterval: activation
        )
        #expect(now == at(.seconds(11)))
        #expect(clock.now == now && clock.wallAt == wall + .seconds(1))
    }

    @Test func forwardStep_isBoundedByWhatTheMemberMeasured_plusTheSlack() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        let now = clock.advance(
            wall: wall + .seconds(7_200), sentAt: sent(.seconds(1)), previous: previous(applied: .seconds(10), sent: .zero),
            activationInterval: activation
        )
        #expect(now == at(.seconds(11)) + StoreClock.slack)
        // The step is taken up: the next heartbeat counts the wall clock from where it stands now.
        let next = clock.advance(
            wall: wall + .seconds(7_201), sentAt: sent(.seconds(2)), previous: previous(applied: .seconds(11), sent: .seconds(1)),
            activationInterval: activation
        )
        #expect(next == at(.seconds(12)) + StoreClock.slack)
    }

    @Test func backwardStep_standsStill_andNeverGoesBack() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        let now = clock.advance(
            wall: wall - .seconds(3_000), sentAt: sent(.seconds(1)), previous: previous(applied: .seconds(10), sent: .zero),
            activationInterval: activation
        )
        #expect(now == at(.seconds(10)))
        // A member whose previous heartbeat lies far back cannot pull the clock back either.
        let stale = clock.advance(
            wall: wall - .seconds(2_999), sentAt: sent(.seconds(1)), previous: previous(applied: .seconds(2), sent: .zero),
            activationInterval: activation
        )
        #expect(stale == at(.seconds(10)))
        #expect(clock.wallAt == wall - .seconds(2_999))
    }

    @Test func firstHeartbeatOfAnIncarnation_advancesAtMostTheSlack() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        #expect(clock.advance(wall: wall + .seconds(7_200), sentAt: sent(.zero), previous: nil, activationInterval: activation)
            == at(.seconds(10)) + StoreClock.slack)
        // Less than the slack on the wall clock: the wall clock's delta.
        #expect(clock.advance(wall: wall + .seconds(7_200) + .milliseconds(5), sentAt: sent(.zero), previous: nil, activationInterval: activation)
            == at(.seconds(10)) + StoreClock.slack + .milliseconds(5))
    }

    @Test func measurementOverMoreThanT_orBackwards_isNoEvidence() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        let longAgo = previous(applied: .seconds(5), sent: .zero)
        #expect(clock.advance(wall: wall + .seconds(60), sentAt: sent(activation + .nanoseconds(1)), previous: longAgo, activationInterval: activation)
            == at(.seconds(10)) + StoreClock.slack)
        let ahead = previous(applied: .seconds(10), sent: .seconds(2))
        #expect(clock.advance(wall: wall + .seconds(120), sentAt: sent(.seconds(1)), previous: ahead, activationInterval: activation)
            == at(.seconds(10)) + StoreClock.slack * 2)
        // Exactly T is still evidence.
        let exactlyT = previous(applied: .seconds(8), sent: .zero)
        #expect(clock.advance(wall: wall + .seconds(180), sentAt: sent(activation), previous: exactlyT, activationInterval: activation)
            == at(.seconds(11)) + StoreClock.slack)
    }

    @Test func memberMeasuringMoreThanTheWallClock_advancesByTheWallClock() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        let now = clock.advance(
            wall: wall + .milliseconds(500), sentAt: sent(.seconds(2)), previous: previous(applied: .seconds(10), sent: .zero),
            activationInterval: activation
        )
        #expect(now == at(.seconds(10)) + .milliseconds(500))
    }

    @Test func heartbeatWithoutSendInstant_followsTheWallClockAlone() {
        var clock = StoreClock(now: at(.seconds(10)), wall: wall)
        #expect(clock.advance(wall: wall + .seconds(7_200), sentAt: nil, previous: previous(applied: .seconds(10), sent: .zero), activationInterval: activation)
            == at(.seconds(7_210)))
        #expect(clock.advance(wall: wall, sentAt: nil, previous: nil, activationInterval: activation) == at(.seconds(7_210)))
    }
}
