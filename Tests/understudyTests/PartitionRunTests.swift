import Foundation
import Testing

/// Real `understudy run --partitions` processes on a real store, with real signals: members join (one heavier),
/// are killed with SIGKILL, frozen past T and stopped with SIGTERM, while every partition's command logs
/// `partition token member pid time` lines.
@Suite("run --partitions", .serialized, .timeLimit(.minutes(4)))
struct PartitionRunTests {
    static let partitions = 16

    /// A command that appends `PARTITION TOKEN MEMBER PID MICROSECONDS P` to the log every 50 ms without forking,
    /// takes 200 ms to stop on SIGTERM, and logs `OVERLAP` if another run of its partition still lives (one flock
    /// per partition).
    static func partitionScript(in scratch: Scratch) throws -> String {
        let script = scratch.file("partition.sh")
        try FileManager.default.createDirectory(atPath: scratch.file("locks"), withIntermediateDirectories: true)
        try """
            #!/bin/bash
            exec 3<> <(:)
            exec 9>"\(scratch.file("locks"))/$UNDERSTUDY_PARTITION"
            flock -n 9 || echo "OVERLAP $UNDERSTUDY_PARTITION $UNDERSTUDY_FENCING_TOKEN $UNDERSTUDY_MEMBER_ID" >> "\(scratch.file("log"))"
            trap 'read -t 0.2 -u 3; exit 0' TERM
            while :; do
                echo "$UNDERSTUDY_PARTITION $UNDERSTUDY_FENCING_TOKEN $UNDERSTUDY_MEMBER_ID $$ ${EPOCHREALTIME/./} $UNDERSTUDY_PARTITIONS" >> "\(scratch.file("log"))"
                read -t 0.05 -u 3
            done

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return script
    }

    struct Line {
        var partition: Int
        var token: UInt64
        var member: String
        var pid: Int32
        var time: Int64
    }

    static func lines(_ scratch: Scratch) -> [Line] {
        scratch.lines("log").compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count == 6, let partition = Int(fields[0]), let token = UInt64(fields[1]), let pid = Int32(fields[3]),
                  let time = Int64(fields[4]), fields[5] == "\(partitions)"
            else { return nil }
            return Line(partition: partition, token: token, member: String(fields[2]), pid: pid, time: time)
        }
    }

    /// Owner and token of every partition, as `status --json` shows them.
    static func owners(_ store: String, in scratch: Scratch) async throws -> [(owner: String?, token: UInt64?)] {
        let result = try await understudy(["status", "--store", store, "--group", "g", "--json"], in: scratch)
        guard let document = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let group = (document["groups"] as? [[String: Any]])?.first,
              let partitions = group["partitions"] as? [[String: Any]]
        else { return [] }
        return partitions.map { ($0["owner"] as? String, ($0["token"] as? NSNumber)?.uint64Value) }
    }

    /// Waits until every partition is owned by one of `members`, each within the balance bound of its weight, and
    /// the commands of the owners log under the owners' tokens; returns the owners.
    static func settled(
        _ store: String, members: [String: Int], in scratch: Scratch, timeout: Duration = .seconds(30)
    ) async throws -> [(owner: String?, token: UInt64?)] {
        let deadline = ContinuousClock.now + timeout
        let total = members.values.reduce(0, +)
        var seen: [(owner: String?, token: UInt64?)] = []
        while ContinuousClock.now < deadline {
            seen = try await owners(store, in: scratch)
            let counts = Dictionary(grouping: seen.compactMap(\.owner), by: { $0 }).mapValues(\.count)
            let balanced = members.allSatisfy { member, weight in
                let share = Double(partitions * weight) / Double(total)
                return (Int(share.rounded(.down)) - 1...Int(share.rounded(.up))).contains(counts[member] ?? 0)
            }
            if seen.count == partitions, seen.allSatisfy({ $0.owner.map { members[$0] != nil } ?? false }), balanced {
                let logged = Set(lines(scratch).suffix(400).map { "\($0.partition) \($0.token)" })
                if seen.enumerated().allSatisfy({ logged.contains("\($0.offset) \($0.element.token ?? 0)") }) { return seen }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("not settled on \(members): \(seen)")
        return seen
    }

    @Test(arguments: ["sqlite", "postgres"])
    func fourMembers_sixteenPartitions_joinKillFreezeTermLeave(backend: String) async throws {
        let scratch = try Scratch()
        let script = try Self.partitionScript(in: scratch)
        let store = backend == "sqlite" ? try await scratch.seasonedSQLiteStore("store.db") : try RunTests.freshPostgresSchemaURL()
        if backend == "postgres" { try await scratch.seasonPostgresStore(store) }
        var running: [String: Launched] = [:]
        func start(_ id: String, weight: Int = 50) throws {
            running[id] = try Launched(
                ["run", "--group", "g", "--store", store, "--partitions", "\(Self.partitions)", "--id", id,
                 "--weight", "\(weight)", "--heartbeat", "100ms", "--activation", "1s", "--stop-grace", "1s", "--", script],
                in: scratch, name: id
            )
        }
        var weights = ["m1": 50, "m2": 50, "m3": 50, "m4": 50]
        for id in weights.keys.sorted() { try start(id) }
        let before = try await Self.settled(store, members: weights, in: scratch)

        // A heavier member joins: partitions move only to it, and the others' commands keep running.
        let joinedAt = Int64(Date().timeIntervalSince1970 * 1_000_000)
        try start("m5", weight: 100)
        weights["m5"] = 100
        let afterJoin = try await Self.settled(store, members: weights, in: scratch)
        let moved = afterJoin.indices.filter { afterJoin[$0].owner != before[$0].owner }
        #expect(moved.allSatisfy { afterJoin[$0].owner == "m5" }, "partitions moved between old members: \(before) → \(afterJoin)")
        #expect(moved.count <= Int((Double(Self.partitions * 100) / 300).rounded(.up)) + 1)
        let stayed = afterJoin.indices.filter { afterJoin[$0].owner == before[$0].owner }
        #expect(stayed.allSatisfy { afterJoin[$0].token == before[$0].token }, "a partition that did not move was re-granted")
        let log = Self.lines(scratch)
        for partition in stayed {
            let ofToken = log.filter { $0.partition == partition && $0.token == before[partition].token }
            #expect(Set(ofToken.map(\.pid)).count == 1, "partition \(partition) was restarted through the join")
            #expect((ofToken.last?.time ?? 0) > joinedAt, "partition \(partition) stopped logging through the join")
        }

        // SIGKILL: the watchdogs kill its commands, release its partitions and leave; the others take them.
        running["m1"]!.signal(SIGKILL)
        weights["m1"] = nil
        _ = try await Self.settled(store, members: weights, in: scratch)

        // SIGSTOP past T: its commands are killed by their watchdogs; resumed, it takes a share again.
        try await running["m2"]!.freeze()
        weights["m2"] = nil
        _ = try await Self.settled(store, members: weights, in: scratch)
        running["m2"]!.signal(SIGCONT)
        weights["m2"] = 50
        _ = try await Self.settled(store, members: weights, in: scratch)

        // SIGTERM: it stops its commands, releases its partitions and exits 0.
        running["m3"]!.signal(SIGTERM)
        #expect(try await running["m3"]!.exitStatus() == 0, "\(running["m3"]!.stderr)")
        weights["m3"] = nil
        _ = try await Self.settled(store, members: weights, in: scratch)

        for (id, member) in running where id != "m1" && id != "m3" {
            member.signal(SIGTERM)
            #expect(try await member.exitStatus() == 0, "\(member.stderr)")
        }

        // Per partition: the runs of successive tokens never overlap, and tokens increase with time.
        #expect(!scratch.read("log").contains("OVERLAP"), "\(scratch.lines("log").filter { $0.hasPrefix("OVERLAP") })")
        let final = Self.lines(scratch)
        for partition in 0..<Self.partitions {
            let runs = Dictionary(grouping: final.filter { $0.partition == partition }, by: \.token)
                .map { token, lines in (token: token, first: lines.map(\.time).min()!, last: lines.map(\.time).max()!, pids: Set(lines.map(\.pid))) }
                .sorted { $0.token < $1.token }
            #expect(runs.count >= 1)
            for (earlier, later) in zip(runs, runs.dropFirst()) {
                #expect(earlier.last < later.first, "partition \(partition): token \(earlier.token) ran until \(earlier.last), token \(later.token) from \(later.first)")
            }
            #expect(runs.allSatisfy { $0.pids.count == 1 }, "partition \(partition): one token ran twice")
        }
        let listed = try await understudy(["status", "--store", store], in: scratch)
        #expect(listed.stdout.contains("0/16 partitions owned"), "\(listed.stdout)")
    }
}
