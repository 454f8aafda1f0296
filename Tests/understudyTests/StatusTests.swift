import Foundation
import Testing

@Suite(.serialized)
struct StatusTests {
    /// Exit code 0 when the goal is met, 1 when below it; the JSON follows schema version 1.
    @Test func test_status_exitCodesAndJSON() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let one = try Launched(["run", "--group", "one", "--store", store, "--id", "solo", "--weight", "70", "--", "sleep", "60"], in: scratch, name: "one")
        let two = try Launched(["run", "--group", "two", "--store", store, "--active-goal", "2", "--", "sleep", "60"], in: scratch, name: "two")
        defer { one.signal(SIGTERM); two.signal(SIGTERM) }

        #expect(try await eventually {
            let output = try Launched(["status", "--store", store, "--group", "one"], in: scratch, name: "poll")
            while output.process.isRunning { usleep(10_000) }
            return output.process.terminationStatus == 0
        })
        let met = try await understudy(["status", "--store", store, "--group", "one", "--json"], in: scratch)
        #expect(met.status == 0)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(met.stdout.utf8)) as? [String: Any])
        #expect(document["schemaVersion"] as? Int == 1)
        let groups = try #require(document["groups"] as? [[String: Any]])
        #expect(groups.count == 1)
        #expect(groups[0]["group"] as? String == "one")
        #expect(groups[0]["activeGoal"] as? Int == 1)
        #expect(groups[0]["meetsGoal"] as? Bool == true)
        let members = try #require(groups[0]["members"] as? [[String: Any]])
        #expect(members.count == 1)
        #expect(members[0]["id"] as? String == "solo")
        #expect(members[0]["rank"] as? Int == 1)
        #expect(members[0]["weight"] as? Int == 70)
        #expect(members[0]["state"] as? String == "active")
        #expect(members[0]["pid"] as? Int == Int(one.pid))
        #expect(members[0]["token"] as? Int == groups[0]["lastToken"] as? Int && members[0]["token"] != nil)
        #expect(members[0]["heartbeatAgeMs"] is Double)

        #expect(try await eventually { two.stderr.contains("activated") })
        let below = try await understudy(["status", "--store", store], in: scratch)
        #expect(below.status == 1, "\(below.stdout)")
        #expect(below.stdout.hasPrefix("store sqlite:///"), "\(below.stdout)")  // which store, always
        #expect(below.stdout.contains("group two: 1/2 active"))
        #expect(below.stdout.contains("BELOW GOAL"))
        #expect(below.stdout.contains("solo"))

        let missing = try await understudy(["status", "--store", scratch.file("nothing.db")], in: scratch)
        #expect(missing.status == 2)
        #expect(missing.stderr.split(separator: "\n").count == 1)
        let unknown = try await understudy(["status", "--store", store, "--group", "nope"], in: scratch)
        #expect(unknown.status == 2)
    }

    /// `watch --json` streams a join and an activation with its token.
    @Test func test_watch_streamsJoinAndActivation() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let member = try Launched(["run", "--group", "w", "--store", store, "--id", "m1", "--", "sleep", "60"], in: scratch, name: "member")
        defer { member.signal(SIGTERM) }
        #expect(try await eventually { FileManager.default.fileExists(atPath: store) })
        let watch = try Launched(["watch", "--store", store, "--json"], in: scratch, name: "watch")
        defer { watch.signal(SIGKILL) }
        #expect(try await eventually { watch.stdout.contains("\"event\":\"activate\"") })
        let lines = watch.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.contains { $0["event"] as? String == "join" && $0["member"] as? String == "m1" })
        #expect(lines.contains { $0["event"] as? String == "activate" && $0["member"] as? String == "m1" && ($0["token"] as? Int ?? 0) > 0 })
        member.signal(SIGTERM)
        #expect(try await eventually { watch.stdout.contains("\"event\":\"leave\"") })
    }

    /// A corrupt row fails the status of its own group only: the others are shown, the corrupt one is named.
    @Test func test_status_ofAStoreWithOneCorruptGroup_showsTheOthers() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let good = try Launched(["run", "--group", "good", "--store", store, "--", "sleep", "60"], in: scratch, name: "good")
        let bad = try Launched(["run", "--group", "bad", "--store", store, "--", "sleep", "60"], in: scratch, name: "bad")
        defer { good.signal(SIGTERM); bad.signal(SIGTERM) }
        #expect(try await eventually { good.stderr.contains("activated") && bad.stderr.contains("activated") })
        let corrupt = "import sqlite3; c = sqlite3.connect('\(store)', timeout=10); c.execute(\"UPDATE members SET phase = 'dancing' WHERE group_name = 'bad'\"); c.commit()"
        let python = try Launched(["/usr/bin/env", "python3", "-c", corrupt], in: scratch, name: "python", executable: true)
        #expect(try await python.exitStatus() == 0, "\(python.stderr)")
        #expect(try await eventually {
            let status = try Launched(["status", "--store", store], in: scratch, name: "poll")
            while status.process.isRunning { usleep(10_000) }
            return status.process.terminationStatus == 1 && status.stdout.contains("group good: 1/1 active")
                && status.stdout.contains("group bad: UNREADABLE") && status.stdout.contains("dancing")
        })
        let json = try await understudy(["status", "--store", store, "--json"], in: scratch)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((document["groups"] as? [[String: Any]])?.map { $0["group"] as? String } == ["good"])
        #expect((document["unreadableGroups"] as? [[String: Any]])?.first?["group"] as? String == "bad")
        #expect(good.process.isRunning && bad.process.isRunning)  // the members survive the corrupt row
    }
}
