import Foundation
import Testing

/// The value-cache example (parallel data state) as real processes: three members and one bootstrapped from a
/// snapshot of a running one, fed by `feed-publisher generate` at 1,000 messages/s on a PostgreSQL channel.
@Suite("Value cache", .serialized, .timeLimit(.minutes(3)))
struct ValueCacheTests {
    static let directory = (understudyPath as NSString).deletingLastPathComponent
    static let subjects = 100

    /// The first `key=value` field `key` of the lines of `launched` that have `event=<event>`.
    static func field(_ key: String, event: String, in launched: Launched) -> String? {
        for line in launched.stdout.split(separator: "\n") {
            let fields = Dictionary(line.split(separator: " ").compactMap { field -> (String, String)? in
                let parts = field.split(separator: "=", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            }, uniquingKeysWith: { _, last in last })
            if fields["event"] == event, let value = fields[key] { return value }
        }
        return nil
    }

    static func snapshot(_ port: Int) throws -> (sequence: Int64, values: [String: String])? {
        guard let response = httpGet(port, "/snapshot"), response.status == 200,
              let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
              let sequence = object["sequence"] as? Int, let values = object["values"] as? [String: String]
        else { return nil }
        return (Int64(sequence), values)
    }

    @Test func failover_theNewActiveAnswersEverySubjectAtOnce_andABootstrappedMemberAgrees() async throws {
        let postgres = try RunTests.freshPostgresSchemaURL()
        let run = String(UUID().uuidString.lowercased().prefix(8))
        let scratch = try Scratch()
        let shared = ["--postgres", postgres, "--channel", "cache_\(run)"]
        func member(_ id: String, bootstrapFrom: Int? = nil, hold: String = "0s") throws -> Launched {
            let bootstrap = bootstrapFrom.map { ["--bootstrap-from", "http://127.0.0.1:\($0)", "--snapshot-hold", hold] } ?? []
            return try Launched(
                [Self.directory + "/value-cache", "serve"] + shared + ["--store-schema", "cache_store_\(run)", "--group", "cache-\(run)", "--id", id] + bootstrap,
                in: scratch, name: id, executable: true
            )
        }
        let members = try ["a", "b", "c"].map { try member($0) }
        var ports: [Int] = []
        for launched in members {
            #expect(try await eventually(timeout: .seconds(30)) { Self.field("port", event: "http", in: launched) != nil }, "\(launched.stderr)")
            ports.append(Int(Self.field("port", event: "http", in: launched) ?? "") ?? 0)
        }
        let generator = try Launched(
            [Self.directory + "/feed-publisher", "generate", "--postgres", postgres, "--channel", "cache_\(run)", "--rate", "1000"],
            in: scratch, name: "generator", executable: true
        )
        // A fourth member joins while the feed runs, from a snapshot of a running member.
        #expect(try await eventually(timeout: .seconds(30)) { (try Self.snapshot(ports[0])?.sequence ?? 0) >= 500 })
        let late = try member("d", bootstrapFrom: ports[0], hold: "400ms")
        #expect(try await eventually(timeout: .seconds(30)) { Self.field("port", event: "http", in: late) != nil }, "\(late.stderr)")
        ports.append(Int(Self.field("port", event: "http", in: late) ?? "") ?? 0)
        #expect(try await eventually(timeout: .seconds(30)) { Self.field("sequence", event: "bootstrapped", in: late) != nil })
        // It loads the snapshot 400 ms after fetching it, so ~400 updates for 100 subjects come from what it kept
        // meanwhile, and the feed stops right after: had it lost them, its values would differ.
        generator.signal(SIGTERM)
        #expect(try await generator.exitStatus() == 0)
        // Its last line: sent=N final=true.
        let final = generator.stdout.split(separator: "\n").last { $0.hasSuffix("final=true") } ?? ""
        let sent = try #require(Int64(final.dropFirst("sent=".count).prefix { $0.isNumber }))

        // Every member, the bootstrapped one too, holds the same values: the latest of each subject.
        let expected = Dictionary(uniqueKeysWithValues: (0..<Self.subjects).map { subject -> (String, String) in
            let last = sent - (sent - Int64(subject)) % Int64(Self.subjects)
            return ("s\(subject)", "m\(last)")
        })
        for (index, port) in ports.enumerated() {
            #expect(try await eventually(timeout: .seconds(30)) { try Self.snapshot(port)?.sequence == sent }, "member \(index)")
            #expect(try Self.snapshot(port)?.values == expected, "member \(index)")
        }
        #expect(!members.contains { $0.stdout.contains("event=gap") } && !late.stdout.contains("event=gap"))

        // Only the active answers, and says so on /active.
        let active = try #require(ports.firstIndex { httpGet($0, "/active")?.status == 200 })
        #expect(ports.filter { httpGet($0, "/active")?.status == 200 }.count == 1)
        #expect(ports.filter { $0 != ports[active] }.allSatisfy { httpGet($0, "/value/s1")?.status == 503 })
        // Killed, it is replaced within about T, and the new active answers every subject with its latest value.
        let all = members + [late]
        all[active].signal(SIGKILL)
        let killedAt = ContinuousClock.now
        #expect(try await eventually(timeout: .seconds(10)) { ports.indices.contains { $0 != active && httpGet(ports[$0], "/active")?.status == 200 } })
        let took = ContinuousClock.now - killedAt
        let next = try #require(ports.indices.first { $0 != active && httpGet(ports[$0], "/active")?.status == 200 })
        for subject in 0..<Self.subjects {
            let response = httpGet(ports[next], "/value/s\(subject)")
            #expect(response?.status == 200 && response?.body == expected["s\(subject)"].map { $0 + "\n" }, "s\(subject): \(String(describing: response))")
        }
        // T = 800 ms; the bound is loose, for a shared machine.
        #expect(took < .seconds(5), "\(took)")
    }
}
