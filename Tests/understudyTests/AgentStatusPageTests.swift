import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The agent's status page in a real browser (headless Chromium, driven by scripts/browser-check), and its
/// JSON, metrics and bearer-guarded drain.
@Suite(.serialized)
struct AgentStatusPageTests {
    /// Agent `a` (weight 100) is active; agent `b` serves the page. The browser loads it and sees `a` active;
    /// `a` is killed with SIGKILL; the page, without a reload, must come to show `b`. A screenshot is saved.
    @Test func test_statusPage_inABrowser_showsTheNewActiveAfterAFailover() async throws {
        let first = try AgentHarness(name: "a")
        let second = try AgentHarness(scratch: first.scratch, name: "b")
        try first.write(first.file(groups: ["web"], weights: ["web": 100], id: "a"))
        try second.write(second.file(groups: ["web"], weights: ["web": 10], id: "b", top: "http = \"127.0.0.1:0\"\nhttp-token = \"s3cret\""))
        let agentA = try first.startAgent()
        #expect(try await eventually { first.starts()["web"]?.member == "a" }, "\(agentA.stderr)")
        let agentB = try second.startAgent()
        #expect(try await eventually { agentB.stderr.contains("serving HTTP") }, "\(agentB.stderr)")
        let port = try #require(agentB.stderr.firstMatch(of: /serving HTTP address=127\.0\.0\.1:(\d+)/)?.1)
        let base = "http://127.0.0.1:\(port)"

        let artifacts = ProcessInfo.processInfo.environment["UNDERSTUDY_TEST_ARTIFACTS"] ?? repositoryFile(".build/test-artifacts")
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let screenshot = artifacts + "/agent-status-page-failover.png"
        try? FileManager.default.removeItem(atPath: screenshot)
        let browser = try Launched(
            [repositoryFile("scripts/browser-check"), base + "/", "web", "a", "b", screenshot, "30"],
            in: first.scratch, name: "browser", executable: true
        )
        #expect(try await eventually(timeout: .seconds(60)) { browser.stdout.contains("showing a") || !browser.process.isRunning },
                "\(browser.stdout) \(browser.stderr)")
        agentA.signal(SIGKILL)
        #expect(try await browser.exitStatus(within: .seconds(60)) == 0, "\(browser.stdout) \(browser.stderr)")
        #expect(browser.stdout.contains("showing b"))
        let png = try #require(FileManager.default.contents(atPath: screenshot), "no screenshot at \(screenshot)")
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))

        // /status and /metrics cover the member; drain over HTTP needs the bearer token, and is logged.
        let status = try await Self.request(base + "/status")
        #expect(status.status == 200 && status.body.contains("\"id\" : \"b\""), "\(status)")
        let document = try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any]
        let failovers = try #require(document?["failovers"] as? [[String: Any]])
        // How long the group was below its goal is known only if b saw a view without an active between the two.
        #expect(failovers.contains { $0["from"] as? [String] == ["a"] && $0["to"] as? [String] == ["b"] }, "\(failovers)")
        let metrics = try await Self.request(base + "/metrics")
        #expect(metrics.body.contains("understudy_transitions_total") && metrics.body.contains("member=\"b\""), "\(metrics.body.prefix(500))")
        #expect(try await Self.request(base + "/drain/web", method: "POST").status == 401)
        #expect(try await Self.request(base + "/drain/web", method: "POST", token: "wrong").status == 401)
        let drained = try await Self.request(base + "/drain/web", method: "POST", token: "s3cret")
        #expect(drained.status == 200 && drained.body == "drained web\n", "\(drained)")
        func logged(_ message: String) -> Bool {
            agentB.stderr.split(separator: "\n").contains { $0.contains(message) && $0.contains("action=drain") && $0.contains("group=web") }
        }
        #expect(try await eventually { logged("notice over HTTP") && logged("warning refused over HTTP: wrong or missing bearer token") }, "\(agentB.stderr)")
        agentB.signal(SIGTERM)
        #expect(try await agentB.exitStatus() == 0)
    }

    /// A reload moves the page to the file's new `http` and takes its new `http-token` at once, without
    /// restarting a member; a new address that cannot be listened on refuses the reload, and nothing changes.
    @Test func test_reload_movesThePage_andTakesTheNewToken_membersUntouched() async throws {
        let harness = try AgentHarness()
        try harness.write(harness.file(groups: ["p"], top: "http = \"127.0.0.1:0\""))
        let agent = try harness.startAgent()
        #expect(try await eventually { harness.starts()["p"] != nil && agent.stderr.contains("serving HTTP") }, "\(agent.stderr)")
        let firstText = try #require(agent.stderr.firstMatch(of: /serving HTTP address=127\.0\.0\.1:(\d+)/)?.1)
        let first = try #require(Int(firstText))
        let command = try #require(harness.starts()["p"])
        #expect(try await Self.request("http://127.0.0.1:\(first)/drain/p", method: "POST", token: "new").status == 403)

        // A port in use: refused, and the page stays where it was.
        let (held, heldPort) = try #require(listeningSocket())
        defer { close(held) }
        try harness.write(harness.file(groups: ["p"], top: "http = \"127.0.0.1:\(heldPort)\""))
        let refused = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
        #expect(refused.status != 0 && refused.stderr.contains("\(heldPort)"), "\(refused)")
        #expect(httpGet(first, "/healthz")?.status == 200)

        // A free port and a token: the page moves, the old port is let go, the token is required at once.
        let (probe, second) = try #require(listeningSocket())
        close(probe)
        try harness.write(harness.file(groups: ["p"], top: "http = \"127.0.0.1:\(second)\"\nhttp-token = \"new\""))
        let plan = try await understudy(["agent", "plan", "--config", harness.config], in: harness.scratch)
        #expect(plan.stdout.contains("~ agent http\n") && plan.stdout.contains("~ agent http-token") && !plan.stdout.contains("restarts"), "\(plan)")
        let moved = try await understudy(["agent", "reload", "--config", harness.config], in: harness.scratch)
        #expect(moved.status == 0, "\(moved)")
        #expect(httpGet(second, "/healthz")?.status == 200)
        #expect(httpGet(first, "/healthz") == nil, "the old address still answers")
        #expect(harness.startCount(of: "p") == 1 && isAlive(command.pid), "the reload restarted the member")
        #expect(try await Self.request("http://127.0.0.1:\(second)/drain/p", method: "POST", token: "old").status == 401)
        let drained = try await Self.request("http://127.0.0.1:\(second)/drain/p", method: "POST", token: "new")
        #expect(drained.status == 200, "\(drained)")
        agent.signal(SIGTERM)
        #expect(try await agent.exitStatus() == 0)
    }

    static func request(_ url: String, method: String = "GET", token: String? = nil) async throws -> (status: Int, body: String) {
        var request = URLRequest(url: try #require(URL(string: url)))
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
