import Foundation
import Synchronization
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore

/// The partitioned runtime against a real clock and an in-memory store. T is 10 s, far longer than any step
/// should take: a handover that waited for expiry would show, and a busy machine cannot fence a member by accident.
@Suite("Partitioned member runtime", .timeLimit(.minutes(2)))
struct PartitionedMemberTests {
    static func configuration(partitions: Int = 12) throws -> PartitionedGroupConfiguration {
        try PartitionedGroupConfiguration(
            group: GroupConfiguration(name: GroupName("orders"), heartbeatInterval: .milliseconds(50), activationInterval: .seconds(10)),
            partitions: partitions
        )
    }

    /// What the bodies of all members do, as one log: who acts on which partition now, and every (partition, token)
    /// that ever started.
    final class Work: Sendable {
        struct State {
            var acting: [Int: MemberID] = [:]
            var started: [(partition: Int, token: FencingToken, member: MemberID)] = []
            var overlaps: [String] = []
        }
        let state = Mutex(State())

        func body(_ member: MemberID) -> @Sendable (PartitionActivation) async throws -> Void {
            { activation in
                self.state.withLock { state in
                    if let other = state.acting[activation.partition] {
                        state.overlaps.append("partition \(activation.partition): \(member) started while \(other) acts")
                    }
                    state.acting[activation.partition] = member
                    state.started.append((activation.partition, activation.token, member))
                }
                defer { self.state.withLock { $0.acting[activation.partition] = nil } }
                try await Task.sleep(for: .seconds(3600))
            }
        }

        var owners: [Int: MemberID] { state.withLock { $0.acting } }
    }

    /// A drained member hands every partition over at once (by release: T is 10 s) and stays in the group resting;
    /// resumed, it takes its share again.
    @Test func aDrainedMember_handsEveryPartitionOver_staysResting_andTakesItsShareWhenResumed() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let work = Work()
        let a = try PartitionedMember(group: Self.configuration(), id: MemberID("a"), store: store)
        let b = try PartitionedMember(group: Self.configuration(), id: MemberID("b"), store: store)
        let runA = Task { try await a.forEachPartition(work.body(a.id)) }
        let runB = Task { try await b.forEachPartition(work.body(b.id)) }
        #expect(try await eventually { work.owners.count == 12 && work.owners.values.filter { $0 == a.id }.count == 6 })
        a.drain()
        #expect(try await eventually { work.owners.count == 12 && Set(work.owners.values) == [b.id] })
        let (state, owned) = (await a.state, await a.ownedPartitions)
        #expect(state == .resting && owned.isEmpty)
        let view = try await b.status()
        #expect(view.members.contains { $0.id == a.id && $0.state == .resting }, "\(view)")
        a.resume()
        #expect(try await eventually { work.owners.count == 12 && work.owners.values.filter { $0 == a.id }.count == 6 })
        a.leave()
        b.leave()
        try await runA.value
        try await runB.value
        let overlaps = work.state.withLock { $0.overlaps }
        #expect(overlaps.isEmpty, "\(overlaps)")
    }

    @Test func membersShareThePartitions_handOverOnJoinAndLeave_andNeverOverlap() async throws {
        let store = InMemoryStore(wallMicroseconds: { 0 })
        let work = Work()
        let a = try PartitionedMember(group: Self.configuration(), id: MemberID("a"), store: store)
        let b = try PartitionedMember(group: Self.configuration(), id: MemberID("b"), store: store)
        let runA = Task { try await a.forEachPartition(work.body(a.id)) }
        #expect(try await eventually { work.owners.count == 12 && Set(work.owners.values) == [a.id] })
        let runB = Task { try await b.forEachPartition(work.body(b.id)) }
        #expect(try await eventually { work.owners.count == 12 && work.owners.values.filter { $0 == b.id }.count == 6 })
        let ownedByA = Set(work.owners.filter { $0.value == a.id }.keys)
        #expect(try await a.ownedPartitions.keys.sorted() == ownedByA.sorted())
        let key = "customer-42"
        let partition = PartitionRouting.partition(of: key, count: 12)
        // a's view of the owners is at most one heartbeat old.
        var routed: MemberID?
        for _ in 0..<200 where routed != work.owners[partition] {
            routed = await a.owner(of: key)
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(routed == work.owners[partition])

        a.leave()
        try await runA.value
        #expect(try await eventually { work.owners.count == 12 && Set(work.owners.values) == [b.id] })
        b.leave()
        try await runB.value
        let state = work.state.withLock { $0 }
        #expect(state.overlaps.isEmpty, "\(state.overlaps)")
        // Per partition, each new owner has a larger token.
        for partition in 0..<12 {
            let tokens = state.started.filter { $0.partition == partition }.map(\.token)
            #expect(tokens == tokens.sorted() && Set(tokens).count == tokens.count, "partition \(partition): \(tokens)")
        }
        // a took 12, b took 6 from a on joining and 6 when a left: 24 starts, no more.
        #expect(state.started.count == 24)
        #expect(try await store.group(named: GroupName("orders"))?.leases.isEmpty == true)
    }
}
