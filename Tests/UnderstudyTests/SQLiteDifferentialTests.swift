import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStoreConformance
import UnderstudySQLite
import UnderstudySimulator

/// The SQLite store's load, diff and write layer against the ledger it stores: the same long random sequences
/// of heartbeats (several groups and members, goals 1–3, joins, weight changes, renewals with right and wrong
/// tokens, releases, leaves, time passing) go to a real SQLite file and to `GroupLedger`s in memory, and every
/// reply and every view must be the same.
@Suite("SQLite store against the ledger", .timeLimit(.minutes(2)))
struct SQLiteDifferentialTests {
    @Test(arguments: [1, 2, 3])
    func randomHeartbeats_giveTheLedgersRepliesAndViews(seed: UInt64) async throws {
        let directory = try TemporaryDirectory()
        let clock = ManualClock()
        let store = try SQLiteStore(path: directory.file("differential.db"), clock: clock.host())
        let createdAt = clock.now
        var ledgers: [GroupName: GroupLedger] = [:]
        var random = SimulationRandom(seed: seed)
        func pick<T>(_ values: [T]) -> T { values[Int(random.next() % UInt64(values.count))] }

        let groups = try ["g1", "g2", "g3"].map(GroupName.init)
        let ids = ["a", "b", "c", "d"]
        var incarnations = Dictionary(uniqueKeysWithValues: ids.map { ($0, 1) })
        var goals = Dictionary(uniqueKeysWithValues: groups.map { ($0, Int(random.next() % 3) + 1) })
        for step in 0..<1_500 {
            clock.advance(by: pick([.zero, .milliseconds(10), .milliseconds(400), .seconds(1), .seconds(4)]))
            let group = pick(groups)
            let id = pick(ids)
            if random.next() % 50 == 0 { incarnations[id, default: 1] += 1 }  // a restart
            if random.next() % 80 == 0 { goals[group] = Int(random.next() % 3) + 1 }
            let info = try MemberInfo(
                id: MemberID(id), incarnation: "\(id)-\(incarnations[id]!)", weight: pick([0, 50, 100]), host: "h", pid: 7
            )
            let known = ledgers[group]?.lastToken?.rawValue ?? 0
            let token = FencingToken(rawValue: max(1, known &- min(known, random.next() % 2)))
            let intent = pick([
                Heartbeat.Intent.none, .acquire, .acquire, .renew(token), .release(token), .leave(releasing: token), .leave(releasing: nil),
            ])
            let heartbeat = Heartbeat(
                group: group, activeGoal: goals[group]!, activationInterval: pick([.seconds(3), .seconds(5)]), member: info,
                phase: pick(MemberPhase.allCases), intent: intent
            )
            var ledger = ledgers[group] ?? GroupLedger(group: group, activeGoal: heartbeat.activeGoal)
            let expected: Result<HeartbeatReply, HeartbeatRejection>
            do {
                expected = .success(try ledger.apply(heartbeat, at: StoreMoment(now: clock.now, recordCompleteSince: createdAt)))
                ledgers[group] = ledger
            } catch {
                expected = .failure(error)
            }
            let actual: Result<HeartbeatReply, HeartbeatRejection>
            do {
                actual = .success(try await store.heartbeat(heartbeat))
            } catch let rejection as HeartbeatRejection {
                actual = .failure(rejection)
            }
            #expect(normalized(actual) == normalized(expected), "seed \(seed), step \(step): \(heartbeat)")
            guard normalized(actual) == normalized(expected) else { return }
        }
        for group in groups {
            #expect(try await store.group(named: group).map(sorted) == ledgers[group].map { sorted($0.view(now: clock.now)) })
        }
        try await store.close()
    }

    /// Views list members in no particular order.
    private func sorted(_ view: GroupView) -> GroupView {
        var view = view
        view.members.sort { $0.info.id < $1.info.id }
        return view
    }

    private func normalized(_ result: Result<HeartbeatReply, HeartbeatRejection>) -> Result<HeartbeatReply, HeartbeatRejection> {
        result.map { reply in HeartbeatReply(outcome: reply.outcome, view: sorted(reply.view)) }
    }
}
