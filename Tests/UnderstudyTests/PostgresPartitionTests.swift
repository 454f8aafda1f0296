import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySimulator
import UnderstudyStore
import UnderstudyStoreConformance

/// Partition leases in PostgreSQL beyond the conformance suite: one round trip whatever the number of
/// operations, the store clock under a stepped server clock, the two kinds of groups kept apart on the short path,
/// and `understudy_partition_heartbeat` against `GroupLedger.apply(_:at:)` on random heartbeats.
@Suite("PostgreSQL partition leases", .serialized, .timeLimit(.minutes(3)))
struct PostgresPartitionTests {
    @Test func heartbeatOf1024Operations_isOneRoundTrip() async throws {
        let (store, _) = try await ledgerLikeStore()
        let a = try member("a")
        let partitions = 1_024
        var started = ContinuousClock.now
        let acquired = try await store.heartbeat(partitionHeartbeat(a, partitions: partitions, (0..<partitions).map { .acquire($0) }))
        let acquireTime = ContinuousClock.now - started
        #expect(acquired.outcomes == (1...partitions).map { .granted(FencingToken(rawValue: UInt64($0))) })
        #expect(store.roundTrips == 1)

        let renewals: [PartitionHeartbeat.Operation] = (0..<partitions).map { .renew($0, FencingToken(rawValue: UInt64($0 + 1))) }
        started = ContinuousClock.now
        let renewed = try await store.heartbeat(partitionHeartbeat(a, partitions: partitions, phase: .active, renewals))
        let renewTime = ContinuousClock.now - started
        #expect(renewed.outcomes == Array(repeating: .renewed, count: partitions))
        #expect(renewed.view.leases.count == partitions)
        #expect(store.roundTrips == 2)
        print("PostgreSQL partition heartbeat of \(partitions) operations: acquire \(acquireTime), renew \(renewTime)")
    }

    @Test func serverClockStepsForward_aLivePartitionLeaseIsNotExpiredEarly() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b")
        let first = try await store.heartbeat(sent(partitionHeartbeat(a, [.acquire(0), .acquire(1)]), at: 10))
        let tokens = first.outcomes.compactMap { if case .granted(let token) = $0 { token } else { nil } }
        try #require(tokens.count == 2)

        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        // A newcomer's first heartbeat is no evidence of time passing: the partitions stay a's.
        let newcomer = try await store.heartbeat(sent(partitionHeartbeat(b, [.acquire(0), .acquire(1)]), at: 500))
        #expect(newcomer.outcomes == [.notGranted, .notGranted])
        #expect(newcomer.view.leases.allSatisfy { $0.holder == a.id && $0.remaining > .milliseconds(2_900) }, "\(newcomer.view.leases)")
        // a renews one second later by its own clock: the store clock moved about that, not an hour.
        try await TestPostgres.stepWallClock(url, by: .seconds(3_600))
        let renewal = try await store.heartbeat(
            sent(partitionHeartbeat(a, phase: .active, [.renew(0, tokens[0]), .renew(1, tokens[1])]), at: 11)
        )
        #expect(renewal.outcomes == [.renewed, .renewed])
        #expect(renewal.view.leases.map(\.remaining) == [.seconds(3), .seconds(3)])
    }

    @Test func serverClockStepsBack_aDeadMembersPartitionsEndAfterT() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url)
        try await TestPostgres.completeRecordForEver(url)
        let a = try member("a"), b = try member("b")
        let first = try await store.heartbeat(sent(partitionHeartbeat(a, [.acquire(3)]), at: 10))
        guard case .granted(let token) = first.outcomes.first else { Issue.record("\(first.outcomes)"); return }

        // The server's clock goes back an hour and a dies; b asks every second by its own clock.
        try await TestPostgres.stepWallClock(url, by: .seconds(-3_600))
        _ = try await store.heartbeat(sent(partitionHeartbeat(b, []), at: 100))
        var grantedAfter: Int?
        for second in 1...5 {
            try await TestPostgres.stepWallClock(url, by: .seconds(1))
            let reply = try await store.heartbeat(sent(partitionHeartbeat(b, [.acquire(3)]), at: 100 + second))
            if case .granted(let next) = reply.outcomes.first {
                #expect(next > token)
                grantedAfter = second
                break
            }
        }
        // T = 3 s: the dead lease ended after 3 s of b's time (4 allows for the heartbeat that saw the step).
        #expect(grantedAfter.map { (3...4).contains($0) } == true, "granted after \(String(describing: grantedAfter)) s")
    }

    @Test func renewalOfAGroupOfSlots_byAMemberOfAPartitionedGroup_isRefusedAlsoOnTheShortPath() async throws {
        let (store, _) = try await ledgerLikeStore()
        let a = try member("a")
        _ = try await store.heartbeat(partitionHeartbeat(a, partitions: 2, [.acquire(0)]))
        let mismatch = HeartbeatRejection.partitionsMismatch(group: try GroupName("partitioned"), stored: 2, requested: nil)
        for intent in [Heartbeat.Intent.none, .renew(FencingToken(rawValue: 1))] {
            await #expect(throws: mismatch) {
                _ = try await store.heartbeat(heartbeat(a, group: "partitioned", goal: 2, phase: .active, intent))
            }
        }
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomPartitionHeartbeats_giveWhatTheLedgerGives(seed: UInt64) async throws {
        let clock = ManualClock()
        let url = try TestPostgres.freshSchemaURL()
        let store = try await PostgresStore(url: url, clock: clock.read)
        try await TestPostgres.withoutFloorOrHistory(url)
        var random = SimulationRandom(seed: seed)
        var ledgers: [GroupName: GroupLedger] = [:]
        // A group's record counts as complete from its first heartbeat less that heartbeat's T (see
        // PostgresDifferentialTests).
        var completeSince: [GroupName: Instant] = [:]
        var tokens: [Int: FencingToken] = [:]  // the last token granted for each partition
        let groups = try (0..<2).map { try GroupName("p\($0)") }
        var grants = 0, rejections = 0, repeats = 0, leaves = 0

        for step in 0..<500 {
            clock.advance(by: .milliseconds([0, 250, 500, 1_000, 2_000][random.next(below: 5)]))
            let group = groups[random.next(below: groups.count)]
            let id = ["m0", "m1", "m2"][random.next(below: 3)]
            let info = try MemberInfo(
                id: MemberID(id), incarnation: "\(id)-\(random.next(below: 10) == 0 ? 2 : 1)", weight: 10, host: "h",
                pid: Int32(1 + random.next(below: 3))
            )
            let partitions = random.next(below: 12) == 0 ? 3 : 6
            // Partitions out of range now and then, and some named twice in one heartbeat.
            let operations: [PartitionHeartbeat.Operation] = (0..<random.next(below: 9)).map { _ in
                let partition = random.next(below: 8) - 1
                let known = tokens[partition] ?? FencingToken(rawValue: UInt64(1 + random.next(below: 4)))
                return switch random.next(below: 3) {
                case 0: .acquire(partition)
                case 1: .renew(partition, random.next(below: 6) == 0 ? FencingToken(rawValue: known.rawValue + 1) : known)
                default: .release(partition, known)
                }
            }
            if Set(operations.map(\.partition)).count < operations.count { repeats += 1 }
            let leaving = random.next(below: 15) == 0
            let beat = try PartitionHeartbeat(
                group: group, partitions: partitions, activationInterval: .seconds(1 + Int64(random.next(below: 3))), member: info,
                phase: MemberPhase.allCases[random.next(below: MemberPhase.allCases.count)], operations: operations, leaving: leaving
            )
            let actual: Result<PartitionHeartbeatReply, any Error>
            do { actual = .success(try await store.heartbeat(beat)) } catch { actual = .failure(error) }
            let now = clock.now
            var ledger = ledgers[group] ?? GroupLedger(group: group, activeGoal: partitions)
            let since = completeSince[group] ?? now - beat.activationInterval
            completeSince[group] = since
            let expected = Result { () throws(HeartbeatRejection) in try ledger.apply(beat, at: StoreMoment(now: now, recordCompleteSince: since)) }
            ledgers[group] = ledger
            switch expectSame(expected, actual, "step \(step): \(beat)") {
            case .success(let expected)?:
                for (operation, outcome) in zip(operations, expected.outcomes) {
                    if case .granted(let token) = outcome { tokens[operation.partition] = token; grants += 1 }
                }
                if leaving { leaves += 1 }
            case .failure?: rejections += 1
            case nil: break
            }
        }
        #expect(grants >= 30 && rejections >= 5 && repeats >= 30 && leaves >= 5,
                "\(grants) grants, \(rejections) rejections, \(repeats) heartbeats naming a partition twice, \(leaves) leaves")
        try await store.close()
    }
}

/// `heartbeat` as sent at `seconds` on the member's own clock.
private func sent(_ heartbeat: PartitionHeartbeat, at seconds: Int) -> PartitionHeartbeat {
    var heartbeat = heartbeat
    heartbeat.sentAt = Instant(nanoseconds: Int64(seconds) * 1_000_000_000)
    return heartbeat
}
