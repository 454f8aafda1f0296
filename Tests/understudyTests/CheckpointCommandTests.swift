import Foundation
import Testing

/// `understudy checkpoint` with tokens from real `understudy run` members, frozen and replaced with real signals.
@Suite("checkpoint commands", .serialized, .timeLimit(.minutes(3)))
struct CheckpointCommandTests {
    /// A member's command writes the checkpoint under its token; once the member is frozen past T and replaced,
    /// its token is refused, while the new active's is accepted.
    @Test(arguments: ["sqlite", "postgres"])
    func onlyTheCurrentActive_advancesTheCheckpoint(backend: String) async throws {
        let scratch = try Scratch()
        let store = backend == "sqlite" ? scratch.file("store.db") : try RunTests.freshPostgresSchemaURL()
        let script = scratch.file("writer.sh")
        try """
            #!/bin/sh
            echo "$UNDERSTUDY_FENCING_TOKEN" > "\(scratch.file("token"))-$UNDERSTUDY_MEMBER_ID"
            '\(understudyPath)' checkpoint put --store '\(store)' --group g --name position --token "$UNDERSTUDY_FENCING_TOKEN" "$UNDERSTUDY_MEMBER_ID" \
              >> "\(scratch.file("puts"))" 2>&1 && echo "written $UNDERSTUDY_MEMBER_ID" >> "\(scratch.file("log"))"
            while :; do sleep 0.05; done

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        func member(_ id: String) throws -> Launched {
            try Launched(["run", "--group", "g", "--store", store, "--id", id, "--heartbeat", "200ms", "--activation", "1s", "--", script], in: scratch, name: id)
        }
        let a = try member("a")
        #expect(try await eventually(timeout: .seconds(20)) { scratch.lines("log") == ["written a"] }, "\(scratch.read("puts")) \(a.stderr)")
        let b = try member("b")
        let tokenA = scratch.read("token-a").trimmingCharacters(in: .whitespacesAndNewlines)
        try await a.freeze()
        #expect(try await eventually(timeout: .seconds(20)) { scratch.lines("log") == ["written a", "written b"] }, "\(scratch.read("puts"))")
        let stale = try await understudy(["checkpoint", "put", "--store", store, "--group", "g", "--name", "position", "--token", tokenA, "late"], in: scratch)
        #expect(stale.status == 75, "\(stale)")
        #expect(stale.stderr.contains("newer token") || stale.stderr.contains("holds no valid lease"), "\(stale.stderr)")
        let bogus = try await understudy(["checkpoint", "put", "--store", store, "--group", "g", "--name", "position", "--token", "12345", "x"], in: scratch)
        #expect(bogus.status == 75)
        let read = try await understudy(["checkpoint", "get", "--store", store, "--group", "g", "--name", "position"], in: scratch)
        #expect(read.status == 0 && read.stdout == "b", "\(read)")
        a.signal(SIGCONT)
        b.signal(SIGTERM)
        a.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
        #expect(try await a.exitStatus() != nil)
        let never = try await understudy(["checkpoint", "get", "--store", store, "--group", "g", "--name", "other"], in: scratch)
        #expect(never.status == 0 && never.stdout.isEmpty)
    }
}
