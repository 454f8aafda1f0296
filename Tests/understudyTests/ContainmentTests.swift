import Foundation
import Testing

/// The command's whole tree never outlives its lease, and no slot is released before that tree is dead: real
/// `understudy run` processes on a SQLite store, real SIGKILL and SIGSTOP, commands that escape with `setsid`.
@Suite(.serialized)
struct ContainmentTests {
    /// Whether this machine lets the tests make cgroup v2 leaves (root, or a delegated subtree).
    static let cgroupAvailable: Bool = {
        guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let line = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") }),
              let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
              let mount = mountinfo.split(separator: "\n").first(where: { $0.contains(" - cgroup2 ") })
        else { return false }
        let fields = mount.split(separator: " ")
        let directory = String(fields[4]) + String(line.dropFirst(3))
        let probe = directory + "/understudy-test-probe-\(getpid())"
        guard mkdir(probe, 0o755) == 0 else { return false }
        rmdir(probe)
        return true
    }()

    static let modes = ["cgroup", "process-group"]

    enum Victim: String, CaseIterable { case supervisor, watchdog, both }

    /// A command that takes an exclusive flock (held by all it starts), records its start, and starts a `setsid`
    /// escaper that writes a tick line every 50 ms and records a SIGTERM.
    ///
    /// With `waitingOnSIGTERM`, COMMAND itself waits on SIGTERM until the escaper has exited, so that a SIGTERM
    /// the escaper got has time to show in the log.
    static func escapingScript(in scratch: Scratch, ignoringSIGTERM: Bool = false, waitingOnSIGTERM: Bool = false) throws -> String {
        let script = scratch.file("escaping.sh")
        let log = scratch.file("log")
        try """
            #!/bin/sh
            \(ignoringSIGTERM ? "trap '' TERM" : "")
            exec 9>>"\(scratch.file("lock"))"
            flock -n 9 || echo "OVERLAP $UNDERSTUDY_FENCING_TOKEN" >> "\(log)"
            echo "start $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_MEMBER_ID" >> "\(log)"
            setsid sh -c 'trap "echo term $UNDERSTUDY_FENCING_TOKEN >> \(log); exit 0" TERM
                echo "escaper $UNDERSTUDY_FENCING_TOKEN $$" >> "\(log)"
                while :; do echo "tick $UNDERSTUDY_FENCING_TOKEN 0" >> "\(log)"; sleep 0.05; done' &
            escaper=$!
            \(waitingOnSIGTERM ? "trap 'wait $escaper; exit 0' TERM" : "")
            wait

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return script
    }

    static func member(_ id: String, store: String, mode: String, script: String, in scratch: Scratch, extra: [String] = []) throws -> Launched {
        try Launched(
            ["run", "--group", "g", "--store", store, "--id", id, "--containment", mode, "--heartbeat", "100ms",
             "--activation", "500ms", "--stop-grace", "2s", "--restart-backoff", "30s"] + extra + ["--", script],
            in: scratch, name: id
        )
    }

    /// Starts `a` and waits until its command (token 1) has started its escaper, then starts `b` and waits until it
    /// has joined as the standby.
    static func activeAndStandby(
        store: String, mode: String, extraA: [String] = [], extraB: [String] = [], within timeout: Duration = .seconds(15),
        script: String, in scratch: Scratch
    ) async throws -> (a: Launched, b: Launched) {
        let a = try member("a", store: store, mode: mode, script: script, in: scratch, extra: extraA)
        #expect(try await eventually(timeout: timeout) { scratch.linesByTokenRank("log").contains { $0.hasPrefix("escaper 1") } }, "\(a.stderr)")
        let b = try member("b", store: store, mode: mode, script: script, in: scratch, extra: extraB)
        #expect(try await eventually { b.stderr.contains("joined") }, "\(b.stderr)")
        return (a, b)
    }

    /// The pid of the watchdog that runs the command for `member`, from its log.
    static func watchdogPID(_ member: Launched) -> pid_t? {
        guard let range = member.stderr.range(of: "watchdog=") else { return nil }
        return pid_t(member.stderr[range.upperBound...].prefix { $0.isNumber })
    }

    /// Checks the log: no overlap, and no line of an older token after the first start of a newer one.
    static func checkNoOverlap(_ lines: [String]) {
        #expect(!lines.contains { $0.hasPrefix("OVERLAP") }, "the next command did not get the lock at once: \(lines)")
        var newest = 0
        for line in lines {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let token = Int(fields[1]) else { continue }
            if fields[0] == "start" { newest = max(newest, token) }
            #expect(token >= newest, "a process of token \(token) wrote after token \(newest) started: \(line) in \(lines)")
        }
    }

    /// `kill -9` of the supervisor, of the watchdog, or of both, while the command has a `setsid` escaper: the
    /// whole old tree is dead before the next command starts (it gets the flock at once and no old tick follows
    /// its start), in both containment modes.
    @Test(arguments: modes, Victim.allCases)
    func test_kill9_escaperIsDeadBeforeTheNextCommandStarts(mode: String, victim: Victim) async throws {
        try #require(mode != "cgroup" || Self.cgroupAvailable, "no cgroup v2 leaf can be made here")
        let scratch = try Scratch()
        let script = try Self.escapingScript(in: scratch)
        let store = scratch.file("store.db")
        let (a, b) = try await Self.activeAndStandby(store: store, mode: mode, script: script, in: scratch)
        let escaper = try #require(entries(scratch.linesByTokenRank("log")).first { $0.kind == "escaper" }).pid
        let watchdog = try #require(Self.watchdogPID(a))
        switch victim {
        case .supervisor: a.signal(SIGKILL)
        case .watchdog: kill(watchdog, SIGKILL)
        case .both:
            a.signal(SIGKILL)
            kill(watchdog, SIGKILL)
        }
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } }, "\(a.stderr)\n\(b.stderr)")
        #expect(!isAlive(escaper), "the setsid escaper of token 1 outlived its lease")
        // Long enough for a surviving escaper to tick a few times.
        #expect(try await eventually { scratch.linesByTokenRank("log").filter { $0.hasPrefix("tick 2") }.count >= 5 })
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        if victim == .supervisor {
            // Proof-of-death failover: the watchdog released the slot itself, the lease did not have to expire.
            #expect(try await eventually { a.stderr.contains("released the slot") }, "\(a.stderr)")
        }
        if victim == .watchdog {
            #expect(a.stderr.contains("the watchdog died"), "\(a.stderr)")
        }
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
        // With both dead, the guard killed the cgroup from inside; the next `understudy run` on the host removes it.
        if mode == "cgroup", victim != .both {
            #expect(Self.leftoverLeaves().isEmpty, "cgroup leaves left behind: \(Self.leftoverLeaves())")
        }
    }

    /// No release before the death is proven, even when dying takes time: the old command's escaper holds the flock
    /// and 2 GiB of memory, which the kernel frees (before it closes the process's files) for a good while after
    /// SIGKILL. A slot released on the kill rather than on the proof would let the next command start while the
    /// lock is still held.
    @Test func test_kill9OfTheSupervisor_slowToDieTree_theNextCommandStillGetsTheLockAtOnce() async throws {
        try #require(Self.cgroupAvailable, "no cgroup v2 leaf can be made here")
        let scratch = try Scratch()
        let script = scratch.file("slow-to-die.sh")
        let log = scratch.file("log")
        try """
            #!/bin/sh
            exec 9>>"\(scratch.file("lock"))"
            flock -n 9 || echo "OVERLAP $UNDERSTUDY_FENCING_TOKEN" >> "\(log)"
            echo "start $UNDERSTUDY_FENCING_TOKEN $$ $UNDERSTUDY_MEMBER_ID" >> "\(log)"
            setsid python3 -c '
            import os, sys, time
            memory = bytearray(2 << 30)
            for i in range(0, len(memory), 4096): memory[i] = 1
            open(sys.argv[1], "a").write("escaper %s %d\\n" % (os.environ["UNDERSTUDY_FENCING_TOKEN"], os.getpid()))
            time.sleep(600)
            ' "\(log)" &
            wait

            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let store = scratch.file("store.db")
        let (a, b) = try await Self.activeAndStandby(store: store, mode: "cgroup", within: .seconds(60), script: script, in: scratch)
        a.signal(SIGKILL)
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } }, "\(a.stderr)\n\(b.stderr)")
        #expect(try await eventually { a.stderr.contains("released the slot") }, "\(a.stderr)")
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }

    /// Proof-of-death failover on PostgreSQL: the watchdog of a killed supervisor opens the store again (its
    /// password from the inherited description, not from arguments) and releases the slot.
    @Test func test_kill9OfTheSupervisor_postgres_theWatchdogReleasesTheSlot() async throws {
        let store = try RunTests.freshPostgresSchemaURL()
        let scratch = try Scratch()
        try await scratch.seasonPostgresStore(store)
        let script = try Self.escapingScript(in: scratch)
        // A long lease: only the watchdog's release lets b in within the test's patience.
        let long = ["--heartbeat", "10s", "--activation", "60s"]
        let (a, b) = try await Self.activeAndStandby(store: store, mode: "auto", extraA: long, extraB: long, script: script, in: scratch)
        a.signal(SIGKILL)
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } }, "\(a.stderr)\n\(b.stderr)")
        #expect(a.stderr.contains("released the slot"), "\(a.stderr)")
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }

    /// The leaves of live test supervisors, and of dead ones, that are still there.
    static func leftoverLeaves() -> [String] {
        guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let line = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") }),
              let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
              let mount = mountinfo.split(separator: "\n").first(where: { $0.contains(" - cgroup2 ") })
        else { return [] }
        let directory = String(mount.split(separator: " ")[4]) + String(line.dropFirst(3))
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { name in
            guard name.hasPrefix("understudy."), let pid = pid_t(name.split(separator: ".")[1]) else { return false }
            return !isAlive(pid) && FileManager.default.fileExists(atPath: directory + "/" + name)
        }
    }

    /// A graceful stop sends SIGTERM to every process of the cgroup, escapers included; in process-group mode
    /// only COMMAND's process group gets it, and the escaper is killed with SIGKILL when COMMAND has exited.
    /// Either way it is dead before the slot is released.
    @Test(arguments: modes)
    func test_sigterm_reachesTheEscaperOnlyInCgroupMode_butItDiesBeforeTheRelease(mode: String) async throws {
        try #require(mode != "cgroup" || Self.cgroupAvailable, "no cgroup v2 leaf can be made here")
        let scratch = try Scratch()
        // In process-group mode the escaper never gets SIGTERM: COMMAND waits for it until --stop-grace (2 s).
        let script = try Self.escapingScript(in: scratch, waitingOnSIGTERM: true)
        let store = scratch.file("store.db")
        let (a, b) = try await Self.activeAndStandby(store: store, mode: mode, script: script, in: scratch)
        a.signal(SIGTERM)
        #expect(try await a.exitStatus() == 0)
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } })
        #expect(scratch.linesByTokenRank("log").contains("term 1") == (mode == "cgroup"), "\(scratch.linesByTokenRank("log"))")
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }

    /// A frozen watchdog does not keep the tree alive: the supervisor kills it itself when the grace is over.
    @Test(arguments: modes)
    func test_frozenWatchdog_theSupervisorKillsTheTreeItself(mode: String) async throws {
        try #require(mode != "cgroup" || Self.cgroupAvailable, "no cgroup v2 leaf can be made here")
        let scratch = try Scratch()
        let script = try Self.escapingScript(in: scratch)
        let store = scratch.file("store.db")
        let (a, b) = try await Self.activeAndStandby(store: store, mode: mode, extraA: ["--stop-grace", "500ms"], script: script, in: scratch)
        let escaper = try #require(entries(scratch.linesByTokenRank("log")).first { $0.kind == "escaper" }).pid
        let watchdog = try #require(Self.watchdogPID(a))
        kill(watchdog, SIGSTOP)
        a.signal(SIGTERM)
        #expect(try await a.exitStatus() == 0, "\(a.stderr)")
        #expect(!isAlive(escaper) && !isAlive(watchdog))
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } })
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }

    /// SIGSTOP of the supervisor *and* its watchdog past T: the guard inside the tree has the deadline too and
    /// kills the tree before the lease expires; the standby starts once it has.
    @Test(arguments: modes)
    func test_frozenSupervisorAndWatchdog_theGuardKillsTheTreeAtTheDeadline(mode: String) async throws {
        try #require(mode != "cgroup" || Self.cgroupAvailable, "no cgroup v2 leaf can be made here")
        let scratch = try Scratch()
        let script = try Self.escapingScript(in: scratch)
        let store = scratch.file("store.db")
        let (a, b) = try await Self.activeAndStandby(store: store, mode: mode, script: script, in: scratch)
        let escaper = try #require(entries(scratch.linesByTokenRank("log")).first { $0.kind == "escaper" }).pid
        let watchdog = try #require(Self.watchdogPID(a))
        try await a.freeze()
        kill(watchdog, SIGSTOP)
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } })
        #expect(!isAlive(escaper), "the escaper outlived the lease of its frozen supervisor and watchdog")
        #expect(try await eventually { scratch.linesByTokenRank("log").filter { $0.hasPrefix("tick 2") }.count >= 5 })
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        kill(watchdog, SIGCONT)
        a.signal(SIGCONT)
        for member in [a, b] { member.signal(SIGTERM) }
        for member in [a, b] { #expect(try await member.exitStatus() == 0, "\(member.stderr)") }
    }

    /// SIGSTOP of the active supervisor past T: its watchdog kills the tree and releases the slot; after SIGCONT
    /// the supervisor finds its lease gone and runs nothing on the old token, neither the command nor a hook.
    @Test func test_sigstopPastT_thenSigcont_oneActivationPerToken() async throws {
        let scratch = try Scratch()
        let script = try Self.escapingScript(in: scratch)
        let store = scratch.file("store.db")
        let log = scratch.file("log")
        let hooks = [
            "--on-activate", "echo hook-activate $UNDERSTUDY_FENCING_TOKEN 0 >> \(log)",
            "--on-deactivate", "echo hook-deactivate $UNDERSTUDY_FENCING_TOKEN 0 >> \(log)",
        ]
        let (a, b) = try await Self.activeAndStandby(store: store, mode: "auto", extraA: hooks, extraB: hooks, script: script, in: scratch)
        try await a.freeze()
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } })
        a.signal(SIGCONT)
        #expect(try await eventually { a.stderr.contains("deactivated") }, "\(a.stderr)")
        #expect(try await eventually { scratch.linesByTokenRank("log").filter { $0.hasPrefix("tick 2") }.count >= 5 })
        let lines = scratch.linesByTokenRank("log")
        Self.checkNoOverlap(lines)
        #expect(lines.filter { $0.hasPrefix("start ") }.map { $0.split(separator: " ")[1] } == ["1", "2"], "\(lines)")
        #expect(!lines.contains("hook-deactivate 1 0"), "a hook ran on the stale token: \(lines)")
        // The watchdog released the slot, or (on a slow machine) the lease had expired by the time it tried.
        #expect(a.stderr.contains("released the slot") || a.stderr.contains("nothing to release"), "\(a.stderr)")
        for member in [a, b] { member.signal(SIGTERM) }
        for member in [a, b] { #expect(try await member.exitStatus() == 0) }
    }

    /// An on-activate hook that never ends (and escapes with `setsid`) is bound by the lease: frozen supervisor,
    /// the watchdog kills the hook's tree before the slot can go to another member.
    @Test func test_hookPastTheLease_isKilledBeforeTheLeaseMovesOn() async throws {
        let scratch = try Scratch()
        let log = scratch.file("log")
        let script = try Self.escapingScript(in: scratch)
        let store = scratch.file("store.db")
        let hook = "setsid sh -c 'while :; do echo \"hook $UNDERSTUDY_FENCING_TOKEN 0\" >> \(log); sleep 0.05; done' & wait"
        let a = try Self.member("a", store: store, mode: "auto", script: script, in: scratch, extra: ["--on-activate", hook, "--hook-timeout", "1h"])
        #expect(try await eventually { scratch.linesByTokenRank("log").contains("hook 1 0") })
        let b = try Self.member("b", store: store, mode: "auto", script: script, in: scratch, extra: ["--hook-timeout", "1h"])
        #expect(try await eventually { b.stderr.contains("joined") })
        try await a.freeze()
        #expect(try await eventually { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } }, "\(b.stderr)")
        #expect(try await eventually { scratch.linesByTokenRank("log").filter { $0.hasPrefix("tick 2") }.count >= 5 })
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        a.signal(SIGCONT)
        for member in [a, b] { member.signal(SIGTERM) }
        for member in [a, b] { #expect(try await member.exitStatus() == 0) }
    }

    /// Without `--hook-timeout`, a hook is killed after T − I: a hung on-activate hook does not hold the command up.
    @Test func test_defaultHookTimeout_fitsInsideT() async throws {
        let scratch = try Scratch()
        let log = scratch.file("log")
        let member = try Launched(
            ["run", "--group", "g", "--store", scratch.file("store.db"), "--heartbeat", "100ms", "--activation", "500ms",
             "--on-activate", "sleep 300", "--", "/bin/sh", "-c", "echo started >> \(log); sleep 300"],
            in: scratch, name: "member"
        )
        #expect(try await eventually(timeout: .seconds(10)) { scratch.linesByTokenRank("log") == ["started"] }, "\(member.stderr)")
        #expect(member.stderr.contains("on-activate timed out and was killed") && member.stderr.contains("timeout=400ms"), "\(member.stderr)")
        member.signal(SIGTERM)
        #expect(try await member.exitStatus() == 0)
    }

    /// The second SIGINT kills the tree at once, and releases the slot once it is dead: the standby gets the
    /// flock at once, without waiting for the lease to expire.
    @Test func test_secondInterrupt_releasesTheSlotAfterTheTreeIsDead() async throws {
        let scratch = try Scratch()
        let script = try Self.escapingScript(in: scratch, ignoringSIGTERM: true)
        let store = try await scratch.seasonedSQLiteStore("store.db")
        // A lease far longer than the test's patience: only a release lets b in.
        let long = ["--heartbeat", "10s", "--activation", "60s"]
        let (a, b) = try await Self.activeAndStandby(store: store, mode: "auto", extraA: long + ["--stop-grace", "60s"], extraB: long, script: script, in: scratch)
        a.signal(SIGINT)
        #expect(try await eventually { a.stderr.contains("shutting down") })
        a.signal(SIGINT)
        #expect(try await a.exitStatus() == 130, "\(a.stderr)")
        // b hears of the release at once (change announcement) or at its next heartbeat (10 s).
        #expect(try await eventually(timeout: .seconds(20)) { scratch.linesByTokenRank("log").contains { $0.hasPrefix("start 2") } })
        Self.checkNoOverlap(scratch.linesByTokenRank("log"))
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }

    /// `__release-slot` is a compare-and-set: a release for a token whose lease moved on, or for another
    /// incarnation of a live member id, changes nothing; an unreachable store makes it give up (the lease then
    /// expires by itself) with status 68.
    @Test func test_releaseSlot_whoseLeaseMovedOn_changesNothing_unreachableStoreGivesUp() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let log = scratch.file("log")
        let b = try Launched(
            ["run", "--group", "g", "--store", store, "--id", "b", "--", "/bin/sh", "-c", "echo start $UNDERSTUDY_FENCING_TOKEN 0 >> \(log); exec sleep 300"],
            in: scratch, name: "b"
        )
        #expect(try await eventually { scratch.linesByTokenRank("log") == ["start 1 0"] })
        let token = try #require(scratch.lines("log").first.flatMap { Int($0.split(separator: " ")[1]) })
        func release(member: String, token: Int, store: String) async throws -> (status: Int32, stderr: String) {
            let blob = scratch.file("release-\(member)-\(token).json")
            let json = """
                {"store": "\(store)", "group": "g", "activeGoal": 1, "activationNanoseconds": 500000000, "member": "\(member)",
                 "incarnation": "not-the-live-one", "weight": 50, "host": "h", "pid": 1, "token": \(token), "logFormat": "text",
                 "reason": "test"}
                """
            try json.write(toFile: blob, atomically: true, encoding: .utf8)
            let result = try await understudyShell("exec \"$0\" __release-slot 3<\"\(blob)\"", in: scratch)
            return (result.status, result.stderr)
        }
        let stale = try await release(member: "a", token: token, store: store)
        #expect(stale.status == 0 && stale.stderr.contains("nothing to release"), "\(stale.stderr)")
        let otherIncarnation = try await release(member: "b", token: token, store: store)
        #expect(otherIncarnation.status == 0 && otherIncarnation.stderr.contains("another incarnation"), "\(otherIncarnation.stderr)")
        let status = try await understudy(["status", "--store", store, "--json"], in: scratch)
        #expect(status.stdout.contains("\"lastToken\" : \(token)") || status.stdout.contains("\"lastToken\":\(token)"), "\(status.stdout)")
        #expect(status.stdout.contains("\"state\" : \"active\"") || status.stdout.contains("\"state\":\"active\""), "\(status.stdout)")
        #expect(scratch.linesByTokenRank("log") == ["start 1 0"], "the lease of b moved")
        // A PostgreSQL server that is not there: refused connections, retried until T has passed.
        let unreachable = try await release(member: "b", token: token, store: "postgres://u:p@127.0.0.1:1/db?sslmode=disable")
        #expect(unreachable.status == 68 && unreachable.stderr.contains("expires by itself"), "\(unreachable.stderr)")
        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
    }
}

/// Runs `understudy` through `/bin/sh -c SCRIPT understudy`, for descriptor redirections; at most 30 s.
func understudyShell(_ script: String, in scratch: Scratch) async throws -> (status: Int32, stdout: String, stderr: String) {
    let name = "shell-\(UInt32.random(in: 0...UInt32.max))"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script, understudyPath]
    let stdoutPath = scratch.file("\(name).out"), stderrPath = scratch.file("\(name).err")
    _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
    _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
    try process.run()
    #expect(try await eventually(timeout: .seconds(30)) { !process.isRunning })
    return (process.terminationStatus, scratch.read("\(name).out"), scratch.read("\(name).err"))
}
