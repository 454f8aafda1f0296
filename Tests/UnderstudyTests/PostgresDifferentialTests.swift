import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStoreConformance
import UnderstudySimulator
import UnderstudyPostgres

/// `understudy_heartbeat` (SQL) against `GroupLedger.apply(_:at:)` (Swift), the specification it implements: the
/// same long random sequence of heartbeats — every intent, several members, incarnations and groups, goals 1–3,
/// three activation intervals, the clock moved onto and past expiry instants, the server's identity changed now
/// and then — must give the same outcome, token, rejection and view at every step, on the short path and on the
/// full one.
@Suite("PostgreSQL against the ledger", .serialized, .timeLimit(.minutes(3)))
struct PostgresDifferentialTests {
    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomHeartbeats_giveWhatTheLedgerGives(seed: UInt64) async throws {
        let clock = ManualClock()
        let url = try TestPostgres.freshSchemaURL()
        let schema = try PostgresLocation(url).schema
        let store = try await PostgresStore(url: url, batchWindow: .milliseconds(5), clock: clock.read)
        try await TestPostgres.withoutFloorOrHistory(url)
        var random = SimulationRandom(seed: seed)
        var ledgers: [GroupName: GroupLedger] = [:]
        // The store's moment per group, as the SQL computes it: a group's record counts as complete from its first
        // heartbeat less that heartbeat's T (the schema's record has been complete for ever), and from the first
        // heartbeat on the full path after the server's identity changed.
        var completeSince: [GroupName: Instant] = [:]
        var identityChanged: Set<GroupName> = []
        var tokens: [String: FencingToken] = [:]  // the last token granted to each member of each group
        let groups = try (0..<5).map { try GroupName("d\($0)") }
        let ids = ["m0", "m1", "m2"]
        var steps = 0, grants = 0, rejections = 0, shortPaths = 0, waits = 0

        for round in 0..<600 {
            clock.advance(by: .milliseconds([0, 250, 500, 1_000, 2_000][random.next(below: 5)]))
            if round % 30 == 29 {
                let group = groups[random.next(below: groups.count)]
                try await withRawConnection(url) { raw in
                    try await raw.execute("UPDATE \(schema).groups SET identity = 'elsewhere' WHERE name = '\(group)'")
                }
                if ledgers[group] != nil { identityChanged.insert(group) }
            }
            // Up to one heartbeat per group at this instant, sent together: groups are independent, so how the
            // store batches them cannot matter. Groups join the sequence one by one.
            var beats: [Heartbeat] = []
            for group in groups.prefix(1 + round / 60) where random.next(below: 3) > 0 {
                let id = ids[random.next(below: ids.count)]
                let info = try MemberInfo(
                    id: MemberID(id), incarnation: "\(id)-\(random.next(below: 8) == 0 ? 2 : 1)",
                    weight: random.next(below: 3) * 10, host: "h", pid: Int32(1 + random.next(below: 3))
                )
                let known = tokens["\(group)/\(id)"] ?? FencingToken(rawValue: UInt64(1 + random.next(below: 3)))
                let intent: Heartbeat.Intent = switch random.next(below: 12) {
                case 0, 1, 2: .acquire
                case 3, 4, 5: .renew(random.next(below: 6) == 0 ? FencingToken(rawValue: known.rawValue + 1) : known)
                case 6: .release(known)
                case 7: .leave(releasing: random.next(below: 2) == 0 ? known : nil)
                default: .none
                }
                let goal = random.next(below: 10) == 0 ? 1 + random.next(below: 3) : 1 + Int(group.rawValue.last!.wholeNumberValue! % 3)
                beats.append(Heartbeat(
                    group: group, activeGoal: goal, activationInterval: .seconds(1 + Int64(random.next(below: 3))),
                    member: info, phase: MemberPhase.allCases[random.next(below: MemberPhase.allCases.count)], intent: intent
                ))
            }
            let answers = await withTaskGroup(of: (Int, Result<HeartbeatReply, any Error>).self) { group in
                for (index, beat) in beats.enumerated() {
                    group.addTask {
                        do { return (index, .success(try await store.heartbeat(beat))) } catch { return (index, .failure(error)) }
                    }
                }
                return await group.reduce(into: [Int: Result<HeartbeatReply, any Error>]()) { $0[$1.0] = $1.1 }
            }
            for (index, beat) in beats.enumerated() {
                steps += 1
                let now = clock.now
                var ledger = ledgers[beat.group] ?? GroupLedger(group: beat.group, activeGoal: beat.activeGoal)
                let since = completeSince[beat.group] ?? now - beat.activationInterval
                completeSince[beat.group] = since
                // The SQL's short path: a renewal or plain heartbeat of a live member of a group with this goal.
                let shortPath = switch beat.intent {
                case .renew, .none:
                    ledger.activeGoal == beat.activeGoal
                        && ledger.members[beat.member.id].map { $0.info.incarnation == beat.member.incarnation && $0.expiresAt > now } == true
                case .acquire, .release, .leave: false
                }
                if shortPath { shortPaths += 1 } else if identityChanged.remove(beat.group) != nil { completeSince[beat.group] = now }
                let moment = StoreMoment(now: now, recordCompleteSince: completeSince[beat.group])
                if beat.intent == .acquire, now < moment.recordCompleteSince! + beat.activationInterval { waits += 1 }
                let expected = Result { () throws(HeartbeatRejection) in try ledger.apply(beat, at: moment) }
                ledgers[beat.group] = ledger
                guard let actual = answers[index] else { Issue.record("step \(steps): no answer"); continue }
                switch expectSame(expected, actual, "step \(steps): \(beat)") {
                case .success(let expected)?:
                    if case .granted(let token) = expected.outcome { tokens["\(beat.group)/\(beat.member.id)"] = token; grants += 1 }
                case .failure?: rejections += 1
                case nil: break
                }
            }
        }
        #expect(grants >= 30 && rejections >= 5 && shortPaths >= 100 && waits >= 5,
                "\(steps) heartbeats: \(grants) grants, \(rejections) rejections, \(shortPaths) short paths, \(waits) acquires while waiting")
        try await store.close()
    }
}

/// Checks that PostgreSQL answered a heartbeat as the ledger did: the same reply, or the same rejection. Returns
/// the ledger's answer when they agree.
func expectSame<Reply: Equatable>(
    _ expected: Result<Reply, HeartbeatRejection>,
    _ actual: Result<Reply, any Error>,
    _ step: String,
    sourceLocation: SourceLocation = #_sourceLocation
) -> Result<Reply, HeartbeatRejection>? {
    switch (expected, actual) {
    case (.success(let reply), .success(let answer)):
        #expect(answer == reply, "\(step)", sourceLocation: sourceLocation)
    case (.failure(let rejection), .failure(let error)):
        #expect(error as? HeartbeatRejection == rejection, "\(step)", sourceLocation: sourceLocation)
    default:
        Issue.record("\(step)\nledger: \(expected)\nPostgreSQL: \(actual)", sourceLocation: sourceLocation)
        return nil
    }
    return expected
}
