import Testing
import UnderstudyCore

/// ``LeaseTimeline``'s deadlines (I = 1s, T = 3s, the newest confirmed renewal sent at s = 10s).
@Suite("LeaseTimeline")
struct LeaseTimelineTests {
    let timeline: LeaseTimeline

    init() throws {
        timeline = LeaseTimeline(confirmedSentAt: at(.seconds(10)), configuration: try Fixture.configuration())
    }

    @Test func deadlines_followFromTheSendInstantOfTheNewestConfirmedRenewal() {
        #expect(timeline.renewBy == at(.seconds(11)))
        #expect(timeline.selfFence == at(.seconds(12)))
        #expect(timeline.killDeadline == at(.milliseconds(12_250)))
        #expect(timeline.workDeadline == at(.milliseconds(12_500)))
        #expect(timeline.expiry == at(.seconds(13)))
        #expect(timeline.killMargin == .milliseconds(250))
    }

    @Test func confirm_movesTheTimelineOn_neverBack() {
        var timeline = timeline
        timeline.confirm(sentAt: at(.seconds(11)))
        #expect(timeline.selfFence == at(.seconds(13)))
        // An answer to an older renewal arrives last: the timeline stays.
        timeline.confirm(sentAt: at(.milliseconds(10_500)))
        #expect(timeline.confirmedSentAt == at(.seconds(11)))
        #expect(timeline.workDeadline == at(.milliseconds(13_500)))
    }
}
