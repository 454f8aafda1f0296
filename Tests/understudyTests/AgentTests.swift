import Foundation
import Testing

/// Real `understudy agent` processes on a real SQLite store, with real signals and real commands.
@Suite(.serialized)
struct AgentTests {
    enum ReloadCase: String, CaseIterable {
        case editOne, addOne, removeOne, invalidFile, formattingOnly
    }

    /// Three groups run; the file changes; exactly the members the change names get new command pids.
    @Test(arguments: ReloadCase.allCases)
    func test_reload_restartsExactlyTheEditedMembers(change: ReloadCase) async throws {
        let harness = try AgentHarness()
        try harness.write(harness.file(groups: ["g1", "g2", "g3"]))
        let agent = try harness.startAgent()
        #expect(try await eventually { harness.starts().count == 3 }, "\(agent.stderr)")
        let before = harness.starts()
        let countsBefore = before.keys.reduce(into: [String: Int]()) { $0[$1] = harness.startCount(of: $1) }
        let tokensBefore = try await harness.tokens()

        var expectNew: Set<String> = []
        var expectGone: Set<String> = []
        switch change {
        case .editOne:
            try harness.write(harness.file(groups: ["g1", "g2", "g3"], weights: ["g2": 70]))
            // SIGHUP, as systemd's `reload` sends it; the agent logs when it has applied the change.
            agent.signal(SIGHUP)
            #expect(try await eventually { agent.stderr.contains("notice reloaded") }, "\(agent.stderr)")
            expectNew = ["g2"]
        case .addOne:
            try harness.write(harness.file(groups: ["g1", "g2", "g3", "g4"]))
            let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
            #expect(reload.status == 0 && reload.stdout.contains("+ g4/"), "\(reload)")
            expectNew = ["g4"]
        case .removeOne:
            try harness.write(harness.file(groups: ["g1", "g2"]))
            let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
            #expect(reload.status == 0 && reload.stdout.contains("- g3/"), "\(reload)")
            expectGone = ["g3"]
        case .invalidFile:
            try harness.write("bogus = 1\n" + harness.file(groups: ["g1", "g2", "g3"], weights: ["g2": 70]))
            let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
            #expect(reload.status == 76, "\(reload)")
            #expect(reload.stderr.contains("agent.toml:1: bogus: unknown key"), "\(reload.stderr)")
            let plan = try await understudy(["agent", "plan", "--config", harness.config], in: harness.scratch)
            #expect(plan.status == 76 && plan.stderr == reload.stderr, "\(plan)")
        case .formattingOnly:
            try harness.write("# the same three members, reordered, with comments and other spacing\n"
                + harness.file(groups: ["g3", "g1", "g2"]).replacingOccurrences(of: " = ", with: "   =   ") + "\n# end\n")
            let plan = try await understudy(["agent", "plan", "--config", harness.config], in: harness.scratch)
            #expect(plan.status == 0 && plan.stdout.contains("no changes"), "\(plan)")
            let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
            #expect(reload.status == 0, "\(reload)")
        }

        // A stopped member's command is gone by the time the reload has answered; a started one starts once
        // its new member is elected.
        for group in expectGone { #expect(!isAlive(try #require(before[group]).pid), "\(group) still runs") }
        #expect(try await eventually { expectNew.allSatisfy { harness.startCount(of: $0) == countsBefore[$0, default: 0] + 1 } }, "\(agent.stderr)")
        let after = harness.starts()
        let tokensAfter = try await harness.tokens()
        for (group, start) in before where !expectNew.contains(group) && !expectGone.contains(group) {
            #expect(after[group]?.pid == start.pid, "\(group)'s command was restarted: \(agent.stderr)")
            #expect(harness.startCount(of: group) == countsBefore[group], "\(group) started again: \(agent.stderr)")
            #expect(isAlive(start.pid), "\(group)'s command died: \(agent.stderr)")
            #expect(tokensAfter[group] == tokensBefore[group], "\(group)'s token changed")
        }
        for group in expectNew {
            #expect(after[group]?.pid != before[group]?.pid)
            if let old = before[group] { #expect(!isAlive(old.pid)) }
        }

        agent.signal(SIGTERM)
        #expect(try await agent.exitStatus() == 0, "\(agent.stderr)")
        #expect(harness.markedProcesses().isEmpty, "commands outlived the agent")
    }

    /// SIGKILL of the agent: every command of its three groups, and what they started, dies with it, and the
    /// watchdogs' proof of death lets another agent's standbys take over at once, long before the leases end.
    @Test func test_kill9_ofTheAgent_leavesNoProcessOfItsGroups_andStandbysTakeOverAtOnce() async throws {
        let harness = try AgentHarness()
        let other = try AgentHarness(scratch: harness.scratch, name: "b")
        let groups = ["k1", "k2", "k3"]
        // T = 8 s: a takeover that waited for the leases to end could not come within the 4 s allowed below.
        try harness.write(harness.file(groups: groups, weights: ["k1": 100, "k2": 100, "k3": 100], id: "a", activation: "8s"))
        try other.write(other.file(groups: groups, weights: ["k1": 10, "k2": 10, "k3": 10], id: "b", activation: "8s"))
        let agent = try harness.startAgent()
        let standby = try other.startAgent()
        #expect(try await eventually(timeout: .seconds(30)) { harness.starts().count == 3 }, "\(agent.stderr)")
        #expect(harness.starts().values.allSatisfy { $0.member == "a" })
        #expect(try await eventuallyAsync(timeout: .seconds(15)) {
            (try? await other.status())?.filter { $0["state"] as? String == "standby" }.count == 3
        }, "\(standby.stderr)")
        // Each command and the `sleep` it started in the background, at least.
        #expect(try await eventually { harness.markedProcesses().count >= 6 })
        agent.signal(SIGKILL)
        let killed = ContinuousClock.now
        #expect(try await eventually(timeout: .seconds(5)) { harness.markedProcesses().isEmpty }, "left running: \(harness.markedProcesses())")
        #expect(
            try await eventually(timeout: .seconds(4)) { groups.allSatisfy { harness.starts()[$0]?.member == "b" } },
            "not taken over within 4 s of the kill (T = 8 s): \(harness.starts())\n\(standby.stderr)"
        )
        print("agent kill -9: standbys of 3 groups active after \(ContinuousClock.now - killed)")
        standby.signal(SIGTERM)
        #expect(try await standby.exitStatus() == 0)
    }

    /// Drain steps the agent's member of a group down, and it stays standby although it outranks the new active;
    /// resume lets it compete again (and, outranking, take over). Other groups of the agent are untouched.
    @Test func test_drainAndResume() async throws {
        let harness = try AgentHarness()
        let other = try AgentHarness(scratch: harness.scratch, name: "b")
        try harness.write(harness.file(groups: ["g", "h"], weights: ["g": 100], id: "a"))
        try other.write(other.file(groups: ["g"], weights: ["g": 10], id: "b"))
        let agentA = try harness.startAgent()
        #expect(try await eventually { harness.starts()["g"]?.member == "a" && harness.starts()["h"] != nil }, "\(agentA.stderr)")
        let agentB = try other.startAgent()
        #expect(try await eventuallyAsync(timeout: .seconds(15)) { (try? await other.status())?.first?["state"] as? String == "standby" }, "\(agentB.stderr)")
        let first = try #require(harness.starts()["g"])
        let h = try #require(harness.starts()["h"])

        let drain = try await understudy(["agent", "drain", "g", "--config", harness.config], in: harness.scratch)
        #expect(drain.status == 0 && drain.stdout == "drained g\n", "\(drain)")
        #expect(try await eventually { harness.starts()["g"]?.member == "b" }, "\(agentB.stderr)")
        #expect(!isAlive(first.pid))
        let status = try await harness.status()
        let drained = try #require(status.first { $0["group"] as? String == "g" })
        #expect(drained["drained"] as? Bool == true && drained["state"] as? String == "resting", "\(drained)")
        // Absence cannot be awaited: for longer than a lease (T = 2 s) the drained member, though it outranks b,
        // must not take over.
        try await Task.sleep(for: .milliseconds(2_500))
        #expect(harness.starts()["g"]?.member == "b")
        // A drain outlives a restart of the member by a reload: the edited member starts drained.
        try harness.write(harness.file(groups: ["g", "h"], weights: ["g": 90], id: "a"))
        let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
        #expect(reload.status == 0 && reload.stdout.contains("~ g/a (weight)"), "\(reload)")
        try await Task.sleep(for: .milliseconds(2_500))
        #expect(harness.starts()["g"]?.member == "b", "the reloaded member took over despite the drain")
        #expect(try await harness.status().first { $0["group"] as? String == "g" }?["drained"] as? Bool == true)

        let resume = try await understudy(["agent", "resume", "g", "--config", harness.config], in: harness.scratch)
        #expect(resume.status == 0, "\(resume)")
        #expect(try await eventually { harness.starts()["g"]?.member == "a" }, "\(agentA.stderr)")
        #expect(harness.starts()["h"]?.pid == h.pid && harness.startCount(of: "h") == 1)

        let unknown = try await understudy(["agent", "drain", "nope", "--config", harness.config], in: harness.scratch)
        #expect(unknown.status == 78 && unknown.stderr.contains("no member of group \"nope\""), "\(unknown)")
        for agent in [agentA, agentB] { agent.signal(SIGTERM) }
        for agent in [agentA, agentB] { #expect(try await agent.exitStatus() == 0) }
    }

    /// A command that keeps exiting is restarted with a growing rest, until the burst limit: then the member gives
    /// up (and says so in `agent status`) until `agent resume`.
    @Test func test_aCommandThatKeepsExiting_isRestartedUntilTheBurstLimit_thenResumed() async throws {
        let harness = try AgentHarness()
        let runs = harness.scratch.file("runs")
        try harness.write("""
            store = "store.db"
            control = "\(harness.scratch.file("agent.sock"))"

            [[member]]
            group = "flaky"
            command = ["/bin/sh", "-c", "echo run >> \(runs); exit 3"]
            restart-backoff = "100ms"
            restart-backoff-max = "1s"
            restart-burst = 3
            """)
        let agent = try harness.startAgent()
        func runCount() -> Int { harness.scratch.lines("runs").count }
        #expect(try await eventually { agent.stderr.contains("the command keeps exiting: giving up") }, "\(agent.stderr)")
        #expect(runCount() == 3)
        #expect(agent.stderr.contains("backing off") && agent.stderr.contains("rest=200ms"), "\(agent.stderr)")
        let ended = try #require(try await harness.status().first)
        #expect(ended["state"] as? String == "ended", "\(ended)")
        #expect((ended["ended"] as? String)?.hasPrefix("gave up: the command exited 3 times") == true, "\(ended)")
        let resume = try await understudy(["agent", "resume", "flaky", "--config", harness.config], in: harness.scratch)
        #expect(resume.status == 0, "\(resume)")
        #expect(try await eventually { runCount() == 4 })
        agent.signal(SIGTERM)
        #expect(try await agent.exitStatus() == 0)
    }

    /// A `[[worker]]` runs jobs of its queue beside the members; a reload that removes it stops it and leaves
    /// the members running.
    @Test func test_queueWorker_runsJobs_andAReloadRemovesOnlyIt() async throws {
        let harness = try AgentHarness()
        let done = harness.scratch.file("done")
        let worker = """

            [[worker]]
            queue = "jobs"
            command = ["/bin/sh", "-c", "cat >> \(done); echo >> \(done)"]
            concurrency = 2
            poll = "100ms"
            # A new store grants no claim for a claim lease (it may replace one whose claims still run).
            claim-lease = "1s"
            """
        try harness.write(harness.file(groups: ["w1"]) + worker)
        let agent = try harness.startAgent()
        #expect(try await eventually { harness.starts().count == 1 }, "\(agent.stderr)")
        let member = try #require(harness.starts()["w1"])
        for payload in ["one", "two", "three"] {
            let push = try await understudy(["queue", "push", "--store", harness.scratch.file("store.db"), "--queue", "jobs", payload], in: harness.scratch)
            #expect(push.status == 0, "\(push)")
        }
        #expect(try await eventually { Set(harness.scratch.lines("done")) == ["one", "two", "three"] }, "\(agent.stderr)")
        // The queue's depth is counted about once a second.
        #expect(try await eventuallyAsync(timeout: .seconds(10)) {
            let workers = try await understudy(["agent", "status", "--json", "--config", harness.config], in: harness.scratch).stdout
            return workers.contains("\"queue\" : \"jobs\"") && workers.contains("\"state\" : \"running\"") && workers.contains("\"pending\" : 0")
        })

        try harness.write(harness.file(groups: ["w1"]))
        let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
        #expect(reload.status == 0 && reload.stdout.contains("- worker jobs/") && reload.stdout.contains("= w1/"), "\(reload)")
        #expect(harness.starts()["w1"] == member && isAlive(member.pid))
        agent.signal(SIGTERM)
        #expect(try await agent.exitStatus() == 0)
    }

    /// A partitioned member (P = 4) beside an ordinary one: a command per partition, each with its partition, P and
    /// token; a reload that edits only the ordinary member leaves every partition's command and token alone; drain
    /// gives every partition back and resume takes them again; SIGKILL of the agent leaves no command running.
    @Test func test_partitionedMember_runsACommandPerPartition_keepsThemAcrossAReloadOfAnother_andDiesWithTheAgent() async throws {
        let harness = try AgentHarness()
        let parts = harness.scratch.file("parts")
        let script = """
            #!/bin/sh
            echo "$UNDERSTUDY_PARTITION $UNDERSTUDY_PARTITIONS $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_GROUP" >> "\(parts)"
            trap 'kill $!; exit 0' TERM
            sleep 300 &
            wait $!

            """
        try script.write(toFile: harness.scratch.file("partition.sh"), atomically: true, encoding: .utf8)
        chmod(harness.scratch.file("partition.sh"), 0o755)
        func file(plainWeight: Int) -> String {
            harness.file(groups: ["plain"], weights: ["plain": plainWeight]) + """

                [[member]]
                group = "parts"
                command = ["\(harness.scratch.file("partition.sh"))"]
                partitions = 4
                heartbeat = "250ms"
                activation = "2s"
                stop-grace = "2s"
                environment = { UNDERSTUDY_TEST_MARK = "\(harness.mark)" }

                """
        }
        struct PartitionStart: Equatable {
            var token: UInt64
            var pid: pid_t
        }
        /// Every start of each partition's command, oldest first.
        func partitionStarts() -> [Int: [PartitionStart]] {
            var starts: [Int: [PartitionStart]] = [:]
            for fields in harness.scratch.lines("parts").map({ $0.split(separator: " ").map(String.init) }) where fields.count == 5 {
                guard let partition = Int(fields[0]), fields[1] == "4", fields[4] == "parts", let token = UInt64(fields[2]), let pid = pid_t(fields[3]) else {
                    Issue.record("a partition's command saw \(fields)")
                    continue
                }
                starts[partition, default: []].append(PartitionStart(token: token, pid: pid))
            }
            return starts
        }
        /// The partitions and tokens `agent status` shows for the partitioned member.
        func statusPartitions() async throws -> [Int: UInt64]? {
            let member = try await harness.status().first { $0["group"] as? String == "parts" }
            guard let owned = member?["partitions"] as? [[String: Any]] else { return nil }
            return Dictionary(uniqueKeysWithValues: owned.compactMap { entry in
                (entry["partition"] as? Int).flatMap { partition in (entry["token"] as? NSNumber).map { (partition, $0.uint64Value) } }
            })
        }

        try harness.write(file(plainWeight: 50))
        let agent = try harness.startAgent()
        #expect(try await eventually { partitionStarts().keys.sorted() == [0, 1, 2, 3] && harness.starts()["plain"] != nil }, "\(agent.stderr)")
        let before = partitionStarts().mapValues { $0.last! }
        #expect(Set(before.values.map(\.token)).count == 4, "\(before)")
        #expect(before.values.allSatisfy { isAlive($0.pid) })
        #expect(try await eventuallyAsync(timeout: .seconds(15)) { try await statusPartitions() == before.mapValues(\.token) }, "\(agent.stderr)")
        let table = try await understudy(["agent", "status", "--config", harness.config], in: harness.scratch)
        let owned = before.keys.sorted().map { "\($0)=\(before[$0]!.token)" }.joined(separator: " ")
        #expect(table.stdout.contains("partitions 4/4 (partition=token \(owned))"), "\(table)")

        // Only the ordinary member is edited: it restarts; no partition's command does.
        let plain = try #require(harness.starts()["plain"])
        try harness.write(file(plainWeight: 70))
        let reload = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
        #expect(reload.status == 0 && reload.stdout.contains("~ plain/") && reload.stdout.contains("= parts/"), "\(reload)")
        #expect(try await eventually { harness.startCount(of: "plain") == 2 }, "\(agent.stderr)")
        #expect(!isAlive(plain.pid))
        #expect(partitionStarts().mapValues { $0.count } == [0: 1, 1: 1, 2: 1, 3: 1], "a partition's command restarted: \(agent.stderr)")
        #expect(before.values.allSatisfy { isAlive($0.pid) }, "a partition's command died")
        #expect(try await statusPartitions() == before.mapValues(\.token), "a partition's token changed")

        // Drain gives every partition back and keeps the member, resting; resume takes them again with new tokens.
        let drain = try await understudy(["agent", "drain", "parts", "--config", harness.config], in: harness.scratch)
        #expect(drain.status == 0, "\(drain)")
        #expect(try await eventually { before.values.allSatisfy { !isAlive($0.pid) } }, "\(agent.stderr)")
        #expect(try await eventuallyAsync(timeout: .seconds(15)) {
            let member = try await harness.status().first { $0["group"] as? String == "parts" }
            return member?["state"] as? String == "resting" && member?["drained"] as? Bool == true && (member?["partitions"] as? [Any])?.isEmpty == true
        }, "\(agent.stderr)")
        let resume = try await understudy(["agent", "resume", "parts", "--config", harness.config], in: harness.scratch)
        #expect(resume.status == 0, "\(resume)")
        #expect(try await eventually { partitionStarts().values.allSatisfy { $0.count == 2 } && partitionStarts().count == 4 }, "\(agent.stderr)")
        let resumed = partitionStarts().mapValues { $0.last! }
        #expect(resumed.allSatisfy { $0.value.token > before[$0.key]!.token }, "\(resumed)")

        // Each partition's command and its `sleep`, and the ordinary member's command with its own.
        #expect(try await eventually { harness.markedProcesses().count >= 10 }, "\(harness.markedProcesses())")
        agent.signal(SIGKILL)
        #expect(try await eventually(timeout: .seconds(5)) { harness.markedProcesses().isEmpty }, "left running: \(harness.markedProcesses())")
    }

    /// A worker's periodic job is enqueued on its schedule (once per tick) and run by the worker.
    @Test func test_periodicJob_isEnqueuedOnItsSchedule_andRun() async throws {
        let harness = try AgentHarness()
        let done = harness.scratch.file("done")
        try harness.write("""
            store = "store.db"
            control = "\(harness.scratch.file("agent.sock"))"

            [[worker]]
            queue = "chores"
            command = ["/bin/sh", "-c", "echo \\"$(cat) $UNDERSTUDY_JOB_ID\\" >> \(done)"]
            poll = "100ms"
            claim-lease = "1s"
            periodic = { sweep = "@every 1s" }
            """)
        let agent = try harness.startAgent()
        // The first enqueuer catches up on the ticks of the last 10 s at once; then one job comes per second.
        #expect(try await eventually(timeout: .seconds(20)) { !harness.scratch.lines("done").isEmpty }, "\(agent.stderr)")
        let first = harness.scratch.lines("done").count
        #expect(try await eventually(timeout: .seconds(20)) { harness.scratch.lines("done").count >= first + 2 }, "\(agent.stderr)")
        let lines = harness.scratch.lines("done")
        #expect(lines.allSatisfy { $0.hasPrefix("sweep ") }, "\(lines)")
        let status = try await understudy(["agent", "status", "--json", "--config", harness.config], in: harness.scratch)
        let document = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let worker = (document?["workers"] as? [[String: Any]])?.first
        #expect(worker?["periodic"] as? [String: String] == ["sweep": "@every 1s"], "\(status)")
        agent.signal(SIGTERM)
        #expect(try await agent.exitStatus() == 0, "\(agent.stderr)")
    }

    /// systemd's readiness protocol: READY=1 once the control socket answers, RELOADING=1 and READY=1 around a
    /// reload, STOPPING=1 on SIGTERM, as datagrams to `$NOTIFY_SOCKET`.
    @Test func test_systemdNotifications() async throws {
        let harness = try AgentHarness()
        try harness.write(harness.file(groups: ["n1"]))
        let notify = try NotifySocket(path: harness.scratch.file("notify"))
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify.path
        let agent = try Launched(["agent", "--config", harness.config], in: harness.scratch, name: "notified", environment: environment)
        #expect(try await notify.next() == "READY=1", "\(agent.stderr)")
        let status = try await understudy(["agent", "status", "--config", harness.config], in: harness.scratch)
        #expect(status.status == 0, "ready before the control socket answers: \(status)")
        #expect(status.stdout.contains("\nn1/"), "\(status.stdout)")
        agent.signal(SIGHUP)
        #expect(try await notify.next()?.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") == true)
        #expect(try await notify.next() == "READY=1")
        agent.signal(SIGTERM)
        #expect(try await notify.next() == "STOPPING=1")
        #expect(try await agent.exitStatus() == 0)
    }

    /// Mistakes: an invalid file, and a client with no agent to talk to.
    @Test func test_check_listsEveryProblem_andClientsWithoutAnAgentSaySo() async throws {
        let harness = try AgentHarness()
        try harness.write(harness.file(groups: ["ok"]) + "\n[[member]]\ngroup = \"bad group\"\ncommand = [\"/nonexistent/program\"]\nweight = -1\n")
        let check = try await understudy(["agent", "check", "--config", harness.config], in: harness.scratch)
        #expect(check.status == 76)
        let lines = check.stderr.split(separator: "\n")
        #expect(lines.count == 3, "\(check.stderr)")
        #expect(lines.contains { $0.hasSuffix("agent.toml:15: member[2].group: invalid group name \"bad group\": use 1 to 128 characters of A-Z a-z 0-9 . _ -") }, "\(check.stderr)")
        #expect(lines.contains { $0.contains("agent.toml:16: member[2].command: command not found") })
        #expect(lines.contains { $0.contains("agent.toml:17: member[2].weight:") })
        let started = try harness.startAgent()
        #expect(try await started.exitStatus() == 76)

        try harness.write(harness.file(groups: ["ok"]))
        let ok = try await understudy(["agent", "check", "--config", harness.config], in: harness.scratch)
        #expect(ok.status == 0 && ok.stdout.hasSuffix("ok, 1 member\n"), "\(ok)")
        for subcommand in [["status"], ["reload"], ["plan"], ["drain", "ok"]] {
            let client = try await understudy(["agent"] + subcommand + ["--config", harness.config], in: harness.scratch)
            #expect(client.status == 77 && client.stderr.contains("no agent answers at"), "\(subcommand): \(client)")
        }
    }
}

/// An agent's file, its commands' log and its control socket, in a scratch directory.
struct AgentHarness {
    let scratch: Scratch
    let name: String
    /// Put in every command's environment, to find every process of this test's commands.
    let mark = "understudy-agent-test-\(UUID().uuidString)"

    init(scratch: Scratch? = nil, name: String = "agent") throws {
        self.scratch = try scratch ?? Scratch()
        self.name = name
        let script = """
            #!/bin/sh
            echo "start $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_MEMBER_ID $UNDERSTUDY_GROUP" >> "\(self.scratch.file("log"))"
            sleep 300 &
            trap 'echo "stop $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_MEMBER_ID $UNDERSTUDY_GROUP" >> "\(self.scratch.file("log"))"; kill $!; exit 0' TERM
            while :; do sleep 0.05; done

            """
        try script.write(toFile: self.scratch.file("command.sh"), atomically: true, encoding: .utf8)
        chmod(self.scratch.file("command.sh"), 0o755)
    }

    var config: String { scratch.file("\(name).toml") }

    /// A file with one member per group; `top` is added to the top-level keys.
    func file(groups: [String], weights: [String: Int] = [:], id: String? = nil, activation: String = "2s", top: String = "") -> String {
        var text = """
            store = "store.db"
            control = "\(scratch.file("\(name).sock"))"
            \(top)

            """
        for group in groups {
            text += """

                [[member]]
                group = "\(group)"
                command = ["\(scratch.file("command.sh"))"]
                weight = \(weights[group] ?? 50)
                heartbeat = "250ms"
                activation = "\(activation)"
                stop-grace = "2s"
                environment = { UNDERSTUDY_TEST_MARK = "\(mark)" }

                """
            if let id { text += "id = \"\(id)\"\n" }
        }
        return text
    }

    func write(_ text: String) throws {
        try text.write(toFile: config, atomically: true, encoding: .utf8)
    }

    func startAgent() throws -> Launched {
        try Launched(["agent", "--config", config], in: scratch, name: "\(name)-\(UInt32.random(in: 0...UInt32.max))")
    }

    struct Start: Equatable {
        var token: UInt64
        var pid: pid_t
        var member: String
    }

    /// The newest start of each group's command.
    func starts() -> [String: Start] {
        var starts: [String: Start] = [:]
        for fields in scratch.lines("log").map({ $0.split(separator: " ").map(String.init) }) where fields.count == 5 && fields[0] == "start" {
            if let token = UInt64(fields[1]), let pid = pid_t(fields[2]) { starts[fields[4]] = Start(token: token, pid: pid, member: fields[3]) }
        }
        return starts
    }

    func startCount(of group: String) -> Int {
        scratch.lines("log").filter { $0.hasPrefix("start ") && $0.hasSuffix(" \(group)") }.count
    }

    /// `agent status`'s members.
    func status() async throws -> [[String: Any]] {
        let status = try await understudy(["agent", "status", "--json", "--config", config], in: scratch)
        guard status.status == 0 else { throw CocoaError(.fileReadUnknown, userInfo: [NSLocalizedDescriptionKey: status.stderr]) }
        let document = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        return document?["members"] as? [[String: Any]] ?? []
    }

    /// Each group's token as `agent status` shows it (`nil` while not active).
    func tokens() async throws -> [String: UInt64?] {
        var tokens: [String: UInt64?] = [:]
        for member in try await status() {
            if let group = member["group"] as? String { tokens[group] = (member["token"] as? NSNumber)?.uint64Value }
        }
        return tokens
    }

    /// The pids of live processes whose environment holds this harness's mark.
    func markedProcesses() -> [pid_t] {
        let needle = Data("UNDERSTUDY_TEST_MARK=\(mark)".utf8)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(pid_t.init).filter { pid in
            guard isAlive(pid), let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return environment.range(of: needle) != nil
        }
    }
}


/// A Unix datagram socket standing in for systemd's notification socket.
final class NotifySocket {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw POSIXError(.EADDRINUSE) }
    }

    /// The next datagram, waiting at most `timeout`.
    func next(timeout: Duration = .seconds(15)) async throws -> String? {
        var buffer = [UInt8](repeating: 0, count: 4_096)
        var received = -1
        _ = try await eventually(timeout: timeout) {
            received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            return received >= 0
        }
        return received >= 0 ? String(decoding: buffer[..<received], as: UTF8.self) : nil
    }

    deinit {
        close(fd)
        unlink(path)
    }
}
