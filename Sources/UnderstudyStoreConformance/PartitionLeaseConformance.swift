import Testing
import UnderstudyCore
import UnderstudyStore

/// What a store of partitioned groups has: partition leases, the leases of groups of slots (a group is one or
/// the other), the directory and announcements.
public typealias PartitionedStore = PartitionLeaseStore & CoordinationStore & ChangeAnnouncing

/// ``PartitionLeaseStore``: the semantics of `GroupLedger.apply(_:at:)` for a ``PartitionHeartbeat``.
public enum PartitionLeaseConformance {
    public static let checks: [ConformanceCheck<any PartitionedStore>] = [
        ConformanceCheck("acquire_manyPartitionsInOneHeartbeat_grantsEachItsOwnToken_andRefusesHeldOnes") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            let first = try await store.heartbeat(partitionHeartbeat(a, [.acquire(0), .acquire(1), .acquire(2)]))
            #expect(first.outcomes == [.granted(token(1)), .granted(token(2)), .granted(token(3))])
            let second = try await store.heartbeat(partitionHeartbeat(b, [.acquire(2), .acquire(5)]))
            #expect(second.outcomes == [.notGranted, .granted(token(4))])
            #expect(second.view.partitioned)
            #expect(second.view.activeGoal == 8)
            #expect(second.view.leases.map(\.slot) == [0, 1, 2, 5])
            #expect(second.view.leases.map(\.holder) == [a.id, a.id, a.id, b.id])
            #expect(second.view.leases.map(\.token) == [token(1), token(2), token(3), token(4)])
            #expect(second.view.lastToken == token(4))
            #expect(Set(second.view.members.map(\.info.id)) == [a.id, b.id])
        },

        ConformanceCheck("acquire_byHolder_confirmsTheSameToken") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(3)]))
            context.clock.advance(by: .seconds(1))
            let again = try await store.heartbeat(partitionHeartbeat(a, [.acquire(3)]))
            #expect(again.outcomes == [.granted(token(1))])
            #expect(again.view.leases.first?.remaining == .seconds(3))
        },

        ConformanceCheck("renew_everyPartitionInOneHeartbeat_extendsEach_andAWrongTokenIsLost") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(0), .acquire(1)]))
            context.clock.advance(by: .milliseconds(2_999))
            let renewal = try await store.heartbeat(
                partitionHeartbeat(a, phase: .active, [.renew(0, token(1)), .renew(1, token(7)), .renew(4, token(1))])
            )
            #expect(renewal.outcomes == [.renewed, .lost, .lost])
            #expect(renewal.view.leases.map(\.slot) == [0, 1])
            #expect(renewal.view.leases.map(\.remaining) == [.seconds(3), .milliseconds(1)])
        },

        ConformanceCheck("renew_atExpiry_isLost_andThePartitionGoesToTheNextWithALargerToken") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(6)]))
            context.clock.advance(by: .seconds(3))
            let stale = try await store.heartbeat(partitionHeartbeat(a, phase: .active, [.renew(6, token(1))]))
            #expect(stale.outcomes == [.lost])
            let next = try await store.heartbeat(partitionHeartbeat(b, [.acquire(6)]))
            #expect(next.outcomes == [.granted(token(2))])
            let late = try await store.heartbeat(partitionHeartbeat(a, phase: .active, [.renew(6, token(1))]))
            #expect(late.outcomes == [.lost])
            #expect(late.view.leases.map(\.holder) == [b.id])
        },

        ConformanceCheck("renew_byAnotherIncarnationOfTheHolder_isLost") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(0)]))
            context.clock.advance(by: .seconds(3))
            let reborn = try member("a", incarnation: "a-2")
            let renewal = try await store.heartbeat(partitionHeartbeat(reborn, phase: .active, [.renew(0, token(1))]))
            #expect(renewal.outcomes == [.lost])
        },

        ConformanceCheck("release_freesOnlyThatPartition_andIsAnnounced") { context in
            let stores = try await context.stores(2)
            let (holder, other) = (stores[0], stores[1])
            let a = try member("a"), b = try member("b")
            _ = try await holder.heartbeat(partitionHeartbeat(a, [.acquire(0), .acquire(1)]))
            var changes = try other.changes(of: GroupName("partitioned")).makeAsyncIterator()
            let released = try await holder.heartbeat(
                partitionHeartbeat(a, phase: .active, [.release(0, token(1)), .renew(1, token(2)), .release(3, token(2))])
            )
            #expect(released.outcomes == [.released, .renewed, .released])
            #expect(released.view.leases.map(\.slot) == [1])
            #expect(await changes.next() != nil)
            let next = try await other.heartbeat(partitionHeartbeat(b, [.acquire(0), .acquire(1)]))
            #expect(next.outcomes == [.granted(token(3)), .notGranted])
        },

        ConformanceCheck("leave_releasesWhatItSays_andForgetsTheMember") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(0), .acquire(1)]))
            _ = try await store.heartbeat(partitionHeartbeat(b, []))
            let left = try await store.heartbeat(
                partitionHeartbeat(a, phase: .stopping, [.release(0, token(1)), .release(1, token(2)), .acquire(2)], leaving: true)
            )
            #expect(left.left)
            #expect(left.outcomes == [.released, .released, .notGranted])
            #expect(left.view.leases.isEmpty)
            #expect(left.view.members.map(\.info.id) == [b.id])
        },

        ConformanceCheck("partitionsOutOfRange_areAnsweredAsHeldByAnother") { context in
            let store = try await context.store()
            let a = try member("a")
            let reply = try await store.heartbeat(
                partitionHeartbeat(a, [.acquire(8), .acquire(-1), .renew(9, token(1)), .release(99, token(1)), .acquire(7)])
            )
            #expect(reply.outcomes == [.notGranted, .notGranted, .lost, .released, .granted(token(1))])
        },

        ConformanceCheck("racingHandles_neverGrantOnePartitionTwice") { context in
            let stores = try await context.stores(2)
            let a = try member("a"), b = try member("b")
            async let first = stores[0].heartbeat(partitionHeartbeat(a, (0..<8).map { .acquire($0) }))
            async let second = stores[1].heartbeat(partitionHeartbeat(b, (0..<8).reversed().map { .acquire($0) }))
            let (replyA, replyB) = try await (first, second)
            let grantsA = replyA.outcomes.compactMap { if case .granted(let t) = $0 { t } else { nil } }
            let grantsB = replyB.outcomes.compactMap { if case .granted(let t) = $0 { t } else { nil } }
            #expect(grantsA.count + grantsB.count == 8)
            #expect(Set(grantsA + grantsB).count == 8)
            let view = try #require(try await stores[0].group(named: GroupName("partitioned")))
            #expect(view.leases.count == 8)
        },

        ConformanceCheck("mismatchedShapes_areRefusedWhileOthersAreAlive") { context in
            let store = try await context.store()
            let a = try member("a"), b = try member("b"), reborn = try member("a", incarnation: "a-2")
            let partitioned = try GroupName("partitioned"), slots = try GroupName("slots")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(0)]))
            await #expect(throws: HeartbeatRejection.partitionsMismatch(group: partitioned, stored: 8, requested: 4)) {
                _ = try await store.heartbeat(partitionHeartbeat(b, partitions: 4, []))
            }
            await #expect(throws: HeartbeatRejection.partitionsMismatch(group: partitioned, stored: 8, requested: nil)) {
                _ = try await store.heartbeat(heartbeat(b, group: "partitioned", goal: 8, .acquire))
            }
            _ = try await store.heartbeat(heartbeat(a, group: "slots", .acquire))
            await #expect(throws: HeartbeatRejection.partitionsMismatch(group: slots, stored: nil, requested: 8)) {
                _ = try await store.heartbeat(partitionHeartbeat(b, group: "slots", [.acquire(0)]))
            }
            await #expect(throws: HeartbeatRejection.memberIDInUse(a.id, host: "test-host", pid: 42)) {
                _ = try await store.heartbeat(partitionHeartbeat(reborn, [.acquire(1)]))
            }
            // Once every member has gone, the group takes the new shape; its token counter goes on.
            context.clock.advance(by: .seconds(3))
            let reshaped = try await store.heartbeat(heartbeat(b, group: "partitioned", goal: 2, .acquire))
            #expect(reshaped.outcome == .granted(token(2)))
            #expect(!reshaped.view.partitioned)
        },

        ConformanceCheck("groupNamed_readsAPartitionedGroup") { context in
            let store = try await context.store()
            let a = try member("a")
            _ = try await store.heartbeat(partitionHeartbeat(a, [.acquire(4), .acquire(2)]))
            let view = try #require(try await store.group(named: GroupName("partitioned")))
            #expect(view.partitioned)
            #expect(view.activeGoal == 8)
            #expect(view.leases.map(\.slot) == [2, 4])
            #expect(view.leases.map(\.token) == [token(2), token(1)])
            #expect(try await store.groupNames(after: nil, limit: 10) == [GroupName("partitioned")])
        },
    ]

    private static func token(_ value: UInt64) -> FencingToken { FencingToken(rawValue: value) }
}

/// A heartbeat of `member` for partitioned group `group` of `partitions` partitions, with T of 3 s.
public func partitionHeartbeat(
    _ member: MemberInfo,
    group: String = "partitioned",
    partitions: Int = 8,
    activation: Duration = .seconds(3),
    phase: MemberPhase = .standby,
    _ operations: [PartitionHeartbeat.Operation],
    leaving: Bool = false
) throws -> PartitionHeartbeat {
    try PartitionHeartbeat(
        group: GroupName(group),
        partitions: partitions,
        activationInterval: activation,
        member: member,
        phase: phase,
        operations: operations,
        leaving: leaving
    )
}
