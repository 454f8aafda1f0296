import Foundation
import Testing
import UnderstudyAgent
import UnderstudyCore
import UnderstudySupervisor

/// Parsing and validating an agent's file: the issue's form, defaults, and every problem with its line and key.
@Suite struct AgentConfigurationTests {
    static let checks = AgentConfiguration.Checks(defaultMemberID: "host-1")

    static func parse(_ text: String) throws(AgentConfigurationError) -> AgentConfiguration {
        try AgentConfiguration.parse(text, file: "agent.toml", checks: checks)
    }

    @Test func test_theIssuesForm_parses_withDefaultsFilledIn() throws {
        let configuration = try Self.parse("""
            store = "sqlite:///var/lib/understudy/understudy.db"   # or postgres://…; a member may override it
            http = "127.0.0.1:9090"

            [[member]]
            group = "billing.scheduler"
            command = ["/usr/local/bin/scheduler", "--config", "/etc/scheduler.yaml"]
            weight = 100
            heartbeat = "100ms"
            activation = "500ms"
            """)
        #expect(configuration.http == HTTPAddress(host: "127.0.0.1", port: 9090))
        let member = try #require(configuration.members.first)
        #expect(member.key == MemberKey(group: "billing.scheduler", id: "host-1"))
        #expect(member.command == ["/usr/local/bin/scheduler", "--config", "/etc/scheduler.yaml"])
        #expect(member.weight == 100)
        #expect(member.store == "sqlite:///var/lib/understudy/understudy.db")
        #expect(member.group.heartbeatInterval == .milliseconds(100))
        #expect(member.group.activationInterval == .milliseconds(500))
        #expect(member.group.activeGoal == 1 && member.group.preemption)
        #expect(member.stopGrace == .seconds(5))
        #expect(member.restart == Supervisor.RestartPolicy(backoff: .seconds(1)))
        #expect(member.hookTimeout == .milliseconds(400))
    }

    @Test func test_everyKey_isRead() throws {
        let configuration = try Self.parse("""
            store = "/a.db"
            http-token = "secret"
            control = "/run/agent.sock"
            containment = "process-group"
            log-format = "json"

            [[member]]
            group = "g"
            id = "one"
            command = ["/bin/true"]
            store = "postgres://u@db/x"
            password-file = "/etc/pw"
            active-goal = 2
            preparation = "300ms"
            preempt = false
            stop-grace = "0s"
            restart-backoff = "2s"
            restart-backoff-max = "30s"
            restart-burst = 5
            restart-window = "1m"
            working-directory = "/tmp"
            on-activate = "ip addr add 10.0.0.1/24 dev eth0"
            on-deactivate = "ip addr del 10.0.0.1/24 dev eth0"
            hook-timeout = "200ms"

            [member.environment]
            RUST_LOG = "info"
            """)
        #expect(configuration.httpToken == "secret" && configuration.control == "/run/agent.sock")
        let member = try #require(configuration.members.first)
        #expect(member.key.id == "one" && member.store == "postgres://u@db/x" && member.passwordFile == "/etc/pw")
        #expect(member.group.activeGoal == 2 && member.group.preparationInterval == .milliseconds(300) && !member.group.preemption)
        #expect(member.stopGrace == .zero)
        #expect(member.restart == Supervisor.RestartPolicy(backoff: .seconds(2), maximumBackoff: .seconds(30), burst: 5, window: .seconds(60)))
        #expect(member.workingDirectory == "/tmp" && member.environment == ["RUST_LOG": "info"])
        #expect(member.onActivate?.hasPrefix("ip addr add") == true && member.hookTimeout == .milliseconds(200))
        #expect(member.containment == .processGroup && member.logFormat == .json)
    }

    @Test func test_problems_areAllReported_eachWithItsLineAndKey() throws {
        let text = """
            store = "/a.db"
            htp = "127.0.0.1:1"

            [[member]]
            group = "bad group"
            command = ["/bin/true"]
            weight = 2000000
            heartbeat = "100"

            [[member]]
            command = "x"

            [[member]]
            group = "g"
            command = ["/bin/true"]
            activation = "150ms"
            """
        let error = try #require(throws: AgentConfigurationError.self) { try Self.parse(text) }
        #expect(error.problems.map { "\($0.line ?? 0) \($0.key)" } == [
            "2 htp",
            "5 member[1].group",
            "7 member[1].weight",
            "8 member[1].heartbeat",
            "10 member[2].group",
            "11 member[2].command",
            "16 member[3].activation",
        ])
        #expect(error.description.split(separator: "\n").first == "agent.toml:2: htp: unknown key (see docs/agent.md)")
    }

    @Test func test_linesInsideAMultiLineValue_areNotTakenForKeys() throws {
        let text = """
            store = "/a.db"

            [[member]]
            group = "g"
            command = [
                "/bin/true",
                "weight=3",   # an argument, not the key
            ]
            on-activate = \"\"\"
            weight = 4
            \"\"\"
            weight = -1
            """
        let error = try #require(throws: AgentConfigurationError.self) { try Self.parse(text) }
        #expect(error.problems.map { "\($0.line ?? 0) \($0.key)" } == ["12 member[1].weight"])
    }

    @Test func test_syntaxError_hasItsLine() throws {
        let error = try #require(throws: AgentConfigurationError.self) { try Self.parse("store = \"/a.db\"\n\n[[member]]\ngroup = \n") }
        #expect(error.problems.count == 1 && error.problems[0].line == 4)
    }

    @Test func test_workers_areRead_andTheirProblemsHaveLines() throws {
        let configuration = try Self.parse("""
            store = "/a.db"

            [[worker]]
            queue = "thumbnails"
            command = ["/bin/thumb"]
            concurrency = 4
            claim-lease = "10s"
            """)
        let worker = try #require(configuration.workers.first)
        #expect(configuration.members.isEmpty && worker.key == MemberKey(group: "thumbnails", id: "host-1"))
        #expect(worker.concurrency == 4 && worker.claimLease == .seconds(10) && worker.command == ["/bin/thumb"])
        let error = try #require(throws: AgentConfigurationError.self) {
            try Self.parse("store = \"/a.db\"\n[[member]]\ngroup = \"g\"\ncommand = [\"/bin/a\"]\n[[worker]]\nqueue = \"q\"\ncommand = [\"/bin/w\"]\nconcurrency = 0\n")
        }
        #expect(error.problems.map { "\($0.line ?? 0) \($0.key)" } == ["8 worker[1].concurrency"])
        let removed = AgentPlan(from: configuration, to: try Self.parse("store = \"/a.db\"\n[[member]]\ngroup = \"g\"\ncommand = [\"/bin/a\"]\n"))
        #expect(removed.removedWorkers == [worker.key] && removed.added.count == 1)
    }

    @Test func test_partitionedMembers_andPeriodicJobs_areRead() throws {
        let configuration = try Self.parse("""
            store = "/a.db"

            [[member]]
            group = "orders"
            command = ["/bin/consume"]
            partitions = 16

            [[member]]
            group = "scheduler"
            command = ["/bin/schedule"]

            [[worker]]
            queue = "maintenance"
            command = ["/bin/job"]
            periodic = { cleanup = "*/5 * * * *", ping = "@every 30s" }
            """)
        #expect(configuration.members.map(\.partitions) == [16, nil])
        let worker = try #require(configuration.workers.first)
        #expect(worker.periodic == ["cleanup": try PeriodicSchedule(parsing: "*/5 * * * *"), "ping": .every(.seconds(30))])
    }

    @Test func test_partitionAndPeriodicProblems_haveTheirLinesAndKeys() throws {
        let text = """
            store = "/a.db"

            [[member]]
            group = "a"
            command = ["/bin/a"]
            partitions = 0

            [[member]]
            group = "b"
            command = ["/bin/b"]
            partitions = 5000

            [[member]]
            group = "c"
            command = ["/bin/c"]
            partitions = "4"

            [[member]]
            group = "d"
            command = ["/bin/d"]
            active-goal = 2
            partitions = 4
            restart-burst = 3

            [[worker]]
            queue = "q"
            command = ["/bin/w"]
            periodic = { cleanup = "every minute" }

            [[worker]]
            queue = "r"
            command = ["/bin/w"]
            periodic = ["cleanup=@every 1s"]

            [[worker]]
            queue = "s"
            command = ["/bin/w"]
            retention = "5s"
            periodic = { cleanup = "@every 1s" }
            """
        let error = try #require(throws: AgentConfigurationError.self) { try Self.parse(text) }
        #expect(error.problems.map { "\($0.line ?? 0) \($0.key)" } == [
            "6 member[1].partitions",
            "11 member[2].partitions",
            "16 member[3].partitions",
            "21 member[4].active-goal",
            "23 member[4].restart-burst",
            "28 worker[1].periodic",
            "33 worker[2].periodic",
            "38 worker[3].retention",
        ])
        let lines = error.description.split(separator: "\n")
        #expect(lines[0].hasPrefix("agent.toml:6: member[1].partitions: "), "\(error)")
        #expect(lines[2] == "agent.toml:16: member[3].partitions: expected an integer, found string", "\(error)")
        #expect(lines[3].contains("cannot be used with `partitions`"), "\(error)")
        #expect(lines[4].hasPrefix("agent.toml:23: member[4].restart-burst: cannot be used with `partitions` yet"), "\(error)")
        #expect(lines[5].hasPrefix("agent.toml:28: worker[1].periodic: cleanup: "), "\(error)")
        let disagreeing = try #require(throws: AgentConfigurationError.self) {
            try Self.parse("store = \"/a.db\"\n[[member]]\ngroup = \"g\"\nid = \"a\"\ncommand = [\"/bin/a\"]\npartitions = 4\n"
                + "[[member]]\ngroup = \"g\"\nid = \"b\"\ncommand = [\"/bin/b\"]\npartitions = 8\n")
        }
        #expect(disagreeing.description == "agent.toml:11: member[2].partitions: member[1] of group \"g\" has partitions = 4: the members of one group must agree on `partitions`")
    }

    @Test func test_sameGroupTwice_needsDistinctIDs() throws {
        let member = "[[member]]\ngroup = \"g\"\ncommand = [\"/bin/true\"]\n"
        let error = try #require(throws: AgentConfigurationError.self) { try Self.parse("store = \"/a.db\"\n" + member + member) }
        #expect(error.problems.map(\.key) == ["member[2].id"])
        _ = try Self.parse("store = \"/a.db\"\n" + member + "id = \"a\"\n" + member + "id = \"b\"\n")
    }

    @Test func test_restartPolicy_doublesWithinTheWindow_upToTheMaximum_thenGivesUp() {
        let policy = Supervisor.RestartPolicy(backoff: .seconds(1), maximumBackoff: .seconds(5), burst: 5, window: .seconds(60))
        var exits: [Instant] = []
        let rests = (0..<5).map { policy.rest(afterExitAt: Instant(nanoseconds: Int64($0) * 1_000_000_000), earlier: &exits) }
        #expect(rests == [.seconds(1), .seconds(2), .seconds(4), .seconds(5), nil])
        // Exits older than the window no longer count.
        var old = [Instant(nanoseconds: 0)]
        #expect(policy.rest(afterExitAt: Instant(nanoseconds: 61_000_000_000), earlier: &old) == .seconds(1))
    }
}

/// What a reload changes, as a pure function of two files.
@Suite struct AgentPlanTests {
    static let base = """
        store = "/a.db"

        [[member]]
        group = "a"
        command = ["/bin/a"]

        [[member]]
        group = "b"
        command = ["/bin/b"]
        weight = 10
        """

    static func plan(_ old: String, _ new: String) throws -> AgentPlan {
        try AgentPlan(from: AgentConfigurationTests.parse(old), to: AgentConfigurationTests.parse(new))
    }

    @Test func test_formattingOnly_changesNothing() throws {
        let reformatted = """
            # the same members, reordered, with comments and other spacing
            [[member]]
            weight   =   10
            command = [ "/bin/b" ]   # b
            group = 'b'

            [[member]]
            command = ["/bin/a"]
            group = "a"
            weight = 50   # the default, written out
            """
        let plan = try Self.plan(Self.base, "store = '/a.db'\n" + reformatted)
        #expect(plan.isEmpty)
        #expect(plan.unchanged == [MemberKey(group: "a", id: "host-1"), MemberKey(group: "b", id: "host-1")])
        #expect(plan.description == "= a/host-1\n= b/host-1\nno changes")
    }

    @Test func test_editAddRemove_areTold_apart() throws {
        let new = """
            store = "/a.db"

            [[member]]
            group = "b"
            command = ["/bin/b", "--fast"]
            weight = 20

            [[member]]
            group = "c"
            command = ["/bin/c"]
            """
        let plan = try Self.plan(Self.base, new)
        let (a, b, c) = (MemberKey(group: "a", id: "host-1"), MemberKey(group: "b", id: "host-1"), MemberKey(group: "c", id: "host-1"))
        #expect(plan.added == [c] && plan.removed == [a] && plan.unchanged.isEmpty)
        #expect(plan.changed == [b: ["command", "weight"]])
        #expect(plan.stopping == [a, b] && plan.starting == [b, c])
        #expect(plan.description == "+ c/host-1\n- a/host-1\n~ b/host-1 (command, weight)")
    }

    @Test func test_aNewNumberOfPartitions_restartsExactlyThatMember() throws {
        let partitioned = Self.base.replacingOccurrences(of: "command = [\"/bin/a\"]", with: "command = [\"/bin/a\"]\npartitions = 4")
        let plan = try Self.plan(partitioned, partitioned.replacingOccurrences(of: "partitions = 4", with: "partitions = 8"))
        let (a, b) = (MemberKey(group: "a", id: "host-1"), MemberKey(group: "b", id: "host-1"))
        #expect(plan.changed == [a: ["partitions"]] && plan.unchanged == [b] && plan.added.isEmpty && plan.removed.isEmpty)
        #expect(try Self.plan(Self.base, partitioned).changed == [a: ["partitions"]])
    }

    @Test func test_aNewPeriodicJob_restartsExactlyThatWorker() throws {
        let workers = Self.base + "\n[[worker]]\nqueue = \"q\"\ncommand = [\"/bin/w\"]\n[[worker]]\nqueue = \"r\"\ncommand = [\"/bin/w\"]\n"
        let plan = try Self.plan(workers, workers + "periodic = { ping = \"@every 10s\" }\n")
        #expect(plan.changedWorkers == [MemberKey(group: "r", id: "host-1")] && plan.unchangedWorkers == [MemberKey(group: "q", id: "host-1")])
        #expect(plan.changed.isEmpty && plan.unchanged.count == 2)
    }

    @Test func test_anAgentWideDefault_changesTheMembersThatUseIt() throws {
        let plan = try Self.plan(Self.base, Self.base.replacingOccurrences(of: "store = \"/a.db\"", with: "store = \"/b.db\""))
        #expect(plan.changed.count == 2 && plan.changed.values.allSatisfy { $0 == ["store"] })
    }
}

/// Failovers told from successive group views.
@Suite struct FailoverHistoryTests {
    @Test func test_aDeathAndATakeover_areOneFailover_withTheTimeBelowGoal() throws {
        var history = FailoverHistory()
        let start = Date(timeIntervalSince1970: 1_000)
        func observe(_ members: [(id: String, state: String)], at offset: TimeInterval) {
            history.observe(group: "g", activeGoal: 1, members: members, at: start + offset)
        }
        observe([("a", "active"), ("b", "standby")], at: 0)
        observe([("a", "active"), ("b", "standby")], at: 1)
        #expect(history.failovers.isEmpty)
        observe([("b", "standby")], at: 2)
        observe([("b", "active")], at: 2.5)
        let failover = try #require(history.failovers.first)
        #expect(history.failovers.count == 1 && failover.from == ["a"] && failover.to == ["b"] && failover.at == start + 2.5)
        #expect(failover.reason == "gone" && failover.belowGoalForMs == 500)
        observe([("a", "active"), ("b", "resting")], at: 3)
        #expect(history.failovers.last?.reason == "resting" && history.failovers.last?.belowGoalForMs == nil)
    }
}
