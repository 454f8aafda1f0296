import Testing
import UnderstudyCore
import UnderstudySupervisor

/// What `understudy watch` prints between two reads of a partitioned group.
@Suite("Change tracker")
struct ChangeTrackerTests {
    static func view(_ leases: [(partition: Int, holder: String, token: UInt64)], members: [String]) throws -> GroupView {
        GroupView(
            group: try GroupName("orders"), activeGoal: 4, partitioned: true, lastToken: nil,
            members: try members.enumerated().map { index, id in
                GroupView.Member(
                    info: try MemberInfo(id: MemberID(id), incarnation: id, host: "h", pid: 1), joinSequence: Int64(index + 1),
                    phase: .active, heartbeatAge: .zero
                )
            },
            leases: try leases.map { GroupView.Lease(slot: $0.partition, holder: try MemberID($0.holder), token: FencingToken(rawValue: $0.token), remaining: .seconds(1)) }
        )
    }

    @Test func aPartitionHandedOver_isOneDeactivationAndOneActivation_andTheOthersAreQuiet() throws {
        var tracker = ChangeTracker()
        _ = tracker.update([try Self.view([(0, "a", 1), (1, "a", 2), (2, "a", 3), (3, "a", 4)], members: ["a"])])
        let changes = tracker.update([try Self.view([(0, "a", 1), (1, "b", 5), (2, "a", 3), (3, "a", 4)], members: ["a", "b"])])
        #expect(changes.map(\.kind) == [.deactivate, .join, .activate])
        let moved = changes.filter { $0.kind != .join }
        #expect(moved.map(\.partition) == [1, 1])
        #expect(moved.map(\.member.rawValue) == ["a", "b"])
        #expect(moved.map(\.token) == [FencingToken(rawValue: 2), FencingToken(rawValue: 5)])
        #expect(moved[0].reason == "released")
        #expect(moved[1].text.hasSuffix("activate   b partition 1 token 5"))
    }
}
