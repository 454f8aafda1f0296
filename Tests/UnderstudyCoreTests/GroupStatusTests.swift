import Testing
import UnderstudyCore

@Suite("GroupStatus")
struct GroupStatusTests {
    /// A member can hold a lease it never uses (its grants arrive too late): the group is then below its goal,
    /// whatever the store's lease table says.
    @Test func holderThatDoesNotReportActive_isNotCounted_andTheGroupIsBelowItsGoal() throws {
        let slow = try Fixture.member("slow")
        let healthy = try Fixture.member("healthy")
        let view = Fixture.view(
            members: [Fixture.viewMember(slow, join: 1, phase: .standby), Fixture.viewMember(healthy, join: 2)],
            leases: [Fixture.lease(slow, token: 7)]
        )
        let status = GroupStatus(view: view)
        #expect(status.activeCount == 0)
        #expect(!status.meetsGoal)
        let holder = try #require(status.members.first { $0.id == slow.id })
        #expect(holder.state == .standby && holder.token == FencingToken(rawValue: 7))
    }

    @Test func holderReportingActive_isCounted() throws {
        let a = try Fixture.member("a")
        let status = GroupStatus(view: Fixture.view(members: [Fixture.viewMember(a, join: 1, phase: .active)], leases: [Fixture.lease(a, token: 1)]))
        #expect(status.activeCount == 1 && status.meetsGoal)
        #expect(status.members.map(\.state) == [.active])
    }
}
