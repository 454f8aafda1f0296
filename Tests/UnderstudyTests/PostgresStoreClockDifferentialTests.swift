import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudySimulator
import UnderstudyPostgres

/// `understudy_advance` (SQL) against `StoreClock.advance` (Swift), the rule it implements: the same long random
/// sequence of heartbeats — a wall clock that steps forward and back by up to hours and jitters, three members
/// whose monotonic clocks drift by up to 3 % and whose heartbeats take 0–300 ms to be applied, new incarnations,
/// gaps longer than T, clients that send no send instant, three activation intervals — must give the same store
/// time at every step.
@Suite("PostgreSQL store clock against StoreClock", .serialized, .timeLimit(.minutes(2)))
struct PostgresStoreClockDifferentialTests {
    /// One member host: its monotonic clock (µs) and the heartbeat its row in the store records, if any.
    private struct Member {
        var offset: Int64
        var ratePPM: Int64
        var incarnation = 1
        var row: (incarnation: Int, appliedAt: Int64, sentAt: Int64?)?

        func clock(_ real: Int64) -> Int64 { offset + real + real * ratePPM / 1_000_000 }
    }

    /// The inputs of one call, in µs, as `understudy_heartbeat` passes them.
    private struct Step {
        var storeNow: Int64, wallAt: Int64, wall: Int64
        var previousAt: Int64?, previousSent: Int64?, sent: Int64?, ttl: Int64

        var sqlValues: String {
            [storeNow, wallAt, wall, previousAt, previousSent, sent, ttl].map { $0.map { "\($0)::bigint" } ?? "NULL::bigint" }
                .joined(separator: ", ")
        }
    }

    @Test(arguments: [1, 2] as [UInt64])
    func randomSequences_giveWhatStoreClockGives(seed: UInt64) async throws {
        let url = try TestPostgres.freshSchemaURL()
        let schema = try PostgresLocation(url).schema
        try await PostgresStore(url: url).close()  // creates the schema and its functions
        var random = SimulationRandom(seed: seed)
        var members = (0..<3).map { _ in
            Member(offset: Int64(random.next(below: 1_000_000_000)), ratePPM: Int64(random.next(below: 60_001)) - 30_000)
        }
        var real: Int64 = 0
        var wallOffset: Int64 = 1_750_000_000_000_000
        let storeOrigin = Instant(nanoseconds: 5_000_000_000_000)
        var clock = StoreClock(now: storeOrigin, wall: Instant(nanoseconds: wallOffset * 1_000))
        var steps: [Step] = [], expected: [Int64] = []
        var forward = 0, backward = 0, firsts = 0, bounded = 0, stoodStill = 0, unsent = 0

        for _ in 0..<4_000 {
            real += Int64([0, 1_000, 100_000, 300_000, 1_000_000, 4_000_000][random.next(below: 6)] + random.next(below: 50_000))
            switch random.next(below: 50) {
            case 0: wallOffset += Int64(1 + random.next(below: 7_200)) * 1_000_000; forward += 1
            case 1: wallOffset -= Int64(1 + random.next(below: 7_200)) * 1_000_000; backward += 1
            case 2: wallOffset += Int64(random.next(below: 30_000_000)) - 15_000_000
            default: break
            }
            let wall = real + wallOffset + Int64(random.next(below: 2_001)) - 1_000
            let index = random.next(below: members.count)
            if random.next(below: 25) == 0 { members[index].incarnation += 1 }
            let sent: Int64? = random.next(below: 40) == 0 ? nil : members[index].clock(real - Int64(random.next(below: 300_000)))
            let row = members[index].row.flatMap { $0.incarnation == members[index].incarnation ? $0 : nil }
            let ttl = Int64([1, 3, 10][random.next(below: 3)]) * 1_000_000
            steps.append(Step(
                storeNow: clock.now.nanoseconds / 1_000, wallAt: clock.wallAt.nanoseconds / 1_000, wall: wall,
                previousAt: row?.appliedAt, previousSent: row?.sentAt, sent: sent, ttl: ttl
            ))
            let before = clock.now
            let previous = row.flatMap { row in
                row.sentAt.map { StoreClock.PreviousHeartbeat(appliedAt: .init(nanoseconds: row.appliedAt * 1_000), sentAt: .init(nanoseconds: $0 * 1_000)) }
            }
            let now = clock.advance(
                wall: .init(nanoseconds: wall * 1_000), sentAt: sent.map { .init(nanoseconds: $0 * 1_000) }, previous: previous,
                activationInterval: .microseconds(ttl)
            )
            expected.append(now.nanoseconds / 1_000)
            if row == nil { firsts += 1 }
            if sent == nil { unsent += 1 }
            if now == before { stoodStill += 1 } else if now - before < .microseconds(wall - steps.last!.wallAt) { bounded += 1 }
            members[index].row = (members[index].incarnation, now.nanoseconds / 1_000, sent)
        }

        let actual = try PostgresQuery.rows(url, """
            SELECT n, "\(schema)".understudy_advance(store_now, wall_at, wall, prev_at, prev_sent, sent, ttl)
            FROM (VALUES \(steps.enumerated().map { "(\($0), \($1.sqlValues))" }.joined(separator: ",\n")))
                AS v (n, store_now, wall_at, wall, prev_at, prev_sent, sent, ttl)
            ORDER BY n
            """)
        #expect(actual.count == steps.count)
        var mismatches = 0
        for (row, values) in actual.enumerated() where values != ["\(row)", "\(expected[row])"] {
            mismatches += 1
            if mismatches <= 3 { Issue.record("step \(row): \(steps[row]): StoreClock \(expected[row]), PostgreSQL \(values)") }
        }
        #expect(mismatches == 0)
        #expect(forward >= 40 && backward >= 40 && firsts >= 100 && bounded >= 100 && stoodStill >= 40 && unsent >= 40,
                "\(forward) forward and \(backward) backward steps, \(firsts) first heartbeats, \(bounded) advances bounded by a member, \(stoodStill) standing still, \(unsent) without send instant")
    }
}

/// Queries the test server outside of Understudy, with psql, for the rows a test compares.
enum PostgresQuery {
    /// The rows `sql` returns, each as its column values.
    static func rows(_ url: String, _ sql: String) throws -> [[String]] {
        let location = try PostgresLocation(url)
        let directory = try TemporaryDirectory()
        let script = directory.file("query.sql")
        try sql.write(toFile: script, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", location.host, "-p", String(location.port),
                             "-U", location.user, "-d", location.database ?? "postgres", "-f", script]
        var environment = ProcessInfo.processInfo.environment
        environment["PGPASSWORD"] = location.password
        process.environment = environment
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw StoreError(.unavailable, "psql failed: \(sql.prefix(200))") }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0.split(separator: "|").map(String.init) }
    }
}
