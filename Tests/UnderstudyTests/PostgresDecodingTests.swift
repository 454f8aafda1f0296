import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
@testable import UnderstudyPostgres
import UnderstudySimulator
import UnderstudyStore
import UnderstudyStoreConformance

/// Every value the PostgreSQL store reads is range-checked: a corrupt row fails its own group's heartbeats, naming
/// the group and the value, and no answer of the server, however mangled, traps.
@Suite("PostgreSQL corrupt rows", .serialized, .timeLimit(.minutes(3)))
struct PostgresDecodingTests {
    @Test(arguments: [
        ("UPDATE %.members SET pid = 0 WHERE member_id = 'c'", "pid 0"),
        ("UPDATE %.members SET join_seq = -1 WHERE member_id = 'c'", "join sequence -1"),
        ("UPDATE %.members SET heartbeat_at = heartbeat_at + 3600000000 WHERE member_id = 'c'", "heartbeat age -"),
        ("UPDATE %.members SET weight = -5 WHERE member_id = 'c'", "weight -5"),
        ("UPDATE %.leases SET slot = 7", "lease of slot 7"),
        ("UPDATE %.leases SET token = 99", "token 99"),
        ("UPDATE %.groups SET last_token = -3", "last token -3"),
    ])
    func corruptRow_failsItsGroupNamingTheValue_andOtherGroupsGoOn(sql: String, message: String) async throws {
        let (store, url) = try await ledgerLikeStore(batchWindow: .milliseconds(20))
        let a = try member("a"), c = try member("c")
        for group in ["broken", "fine"] {
            #expect(try await store.heartbeat(heartbeat(a, group: group, .acquire)).outcome == .granted(FencingToken(rawValue: 1)))
            _ = try await store.heartbeat(heartbeat(c, group: group, .none))
        }
        let schema = try PostgresLocation(url).schema
        let corruption = sql.replacingOccurrences(of: "%", with: schema)
            + (sql.contains("WHERE") ? " AND " : " WHERE ") + (sql.contains(".groups") ? "name" : "group_name") + " = 'broken'"
        try await withRawConnection(url) { raw in try await raw.execute(corruption) }
        let brokenRenewal = try heartbeat(a, group: "broken", phase: .active, .renew(FencingToken(rawValue: 1)))
        let fineRenewal = try heartbeat(a, group: "fine", phase: .active, .renew(FencingToken(rawValue: 1)))
        let broken = Task { try await store.heartbeat(brokenRenewal) }
        let fine = Task { try await store.heartbeat(fineRenewal) }
        let error = await #expect(throws: StoreError.self) { try await broken.value }
        #expect(error?.kind == .corrupt)
        #expect(error?.message.contains("\"broken\"") == true && error?.message.contains(message) == true, "\(error?.message ?? "")")
        #expect(try await fine.value.outcome == .renewed)
    }

    @Test(arguments: [
        (true, 4_096, nil),
        (false, 4_096, "active goal 4096"),
        (true, 4_097, "partitions 4097"),
    ] as [(Bool, Int, String?)])
    func view_ofAPartitionedGroup_allowsItsSizeAndSeveralLeasesAMember(partitioned: Bool, goal: Int, message: String?) throws {
        let location = try PostgresLocation("postgres://u@h/d?schema=fuzz")
        let text = """
            {"group": "g", "goal": \(goal), "partitioned": \(partitioned), "lastToken": 9, "members": [],
             "leases": [{"slot": 0, "holder": "a", "token": 8, "remaining": 10}, {"slot": 4095, "holder": "a", "token": 9, "remaining": 10}]}
            """
        if let message {
            let error = #expect(throws: StoreError.self) { try PostgresStore.decodeView(text, location: location) }
            #expect(error?.message.contains(message) == true, "\(error?.message ?? "")")
        } else {
            let view = try PostgresStore.decodeView(text, location: location)
            #expect(view.partitioned && view.activeGoal == goal && view.leases.map(\.slot) == [0, 4_095])
        }
    }

    @Test func decoder_onRandomAndMutatedAnswers_neverTrapsAndAnswersEveryHeartbeat() throws {
        let location = try PostgresLocation("postgres://u@h/d?schema=fuzz")
        let batch = try ["g", "h"].map { try heartbeat(member("a"), group: $0, goal: 2, .acquire) }
        let valid = #"""
            [{"i": 0, "result": {"outcome": "granted", "token": 7, "view": {"group": "g", "goal": 2, "lastToken": 7,
              "members": [{"id": "a", "incarnation": "a-1", "weight": 50, "host": "h", "pid": 42, "join": 3, "phase": "active", "age": 0},
                          {"id": "b", "incarnation": "b-1", "weight": 10, "host": "h", "pid": 43, "join": 4, "phase": "standby", "age": 1500}],
              "leases": [{"slot": 0, "holder": "a", "token": 7, "remaining": 3000000}, {"slot": 1, "holder": "b", "token": 5, "remaining": 10}]}}},
             {"i": 1, "result": {"outcome": "not-granted", "token": null, "view": {"group": "h", "goal": 2, "lastToken": 0, "members": [], "leases": []}}}]
            """#
        #expect(PostgresStore.replies(valid, to: batch, location: location).allSatisfy { (try? $0.get()) != nil })
        var random = SimulationRandom(seed: 12)
        let extremes = ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "-1", "0", "1e308", "2147483648",
                        "-2147483649", "1.5", "null", "[]", "{}", "\"x\"", "true", "1001"]
        let bytes = Array(valid.utf8)
        var decoded = 0
        for _ in 0..<20_000 {
            var mutated = bytes
            for _ in 0...random.next(below: 3) {
                let at = random.next(below: mutated.count)
                switch random.next(below: 4) {
                case 0: mutated[at] = UInt8(truncatingIfNeeded: random.next(below: 256))
                case 1: mutated.remove(at: at)
                case 2: let symbols = Array("{}[]\":,-0123456789".utf8)
                    mutated.insert(symbols[random.next(below: symbols.count)], at: at)
                default:
                    // A number or literal replaced by an extreme value.
                    var end = at
                    while end < mutated.count, "-0123456789.e+".utf8.contains(mutated[end]) { end += 1 }
                    mutated.replaceSubrange(at..<end, with: Array(extremes[random.next(below: extremes.count)].utf8))
                }
                if mutated.isEmpty { mutated = bytes }
            }
            let text = String(decoding: mutated, as: UTF8.self)
            let replies = PostgresStore.replies(text, to: batch, location: location)
            #expect(replies.count == batch.count)
            for case .success(let reply) in replies {
                decoded += 1
                #expect(reply.view.leases.allSatisfy { $0.token.rawValue >= 1 && $0.token <= reply.view.lastToken! && $0.remaining > .zero })
                #expect(reply.view.members.allSatisfy { $0.joinSequence >= 1 && $0.heartbeatAge >= .zero && $0.info.pid > 0 })
            }
            _ = try? PostgresStore.decodeView(text, location: location)
        }
        #expect(decoded > 1_000, "too few mutations decoded to tell anything: \(decoded)")
    }
}


extension SimulationRandom {
    /// A value in `0..<bound`: the simulator's generator, so a failing mutation or round can be replayed.
    mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
