import Foundation
import Testing

/// `understudy run --http`: real processes serving real HTTP on loopback ports the system picks.
@Suite(.serialized)
struct HTTPTests {
    /// An active and a standby answer /healthz, /active, /status and /metrics with the token COMMAND was given;
    /// after a handover the standby's answers follow it.
    @Test func test_http_activeAndStandby_answerWhatTheyAre() async throws {
        let scratch = try Scratch()
        let script = try scratch.childScript()
        func start(_ id: String, weight: Int) throws -> Launched {
            try Launched(
                [
                    "run", "--group", "g", "--store", scratch.file("store.db"), "--id", id, "--weight", "\(weight)",
                    "--http", "127.0.0.1:0", "--", script,
                ],
                in: scratch, name: id
            )
        }
        /// The token the command of `member` was started with, once it has started.
        func commandToken(_ member: String) async throws -> Int {
            func token() -> Int? { entries(scratch.lines("log")).last { $0.kind == "start" && $0.member == member }?.token }
            #expect(try await eventually { token() != nil }, "the command of \(member) did not start")
            return try #require(token())
        }
        let a = try start("a", weight: 20)
        let aPort = try await servedPort(a)
        let aToken = try await commandToken("a")
        #expect(httpGet(aPort, "/active")?.status == 200, "\(a.stderr)")
        let b = try start("b", weight: 10)
        let bPort = try await servedPort(b)
        #expect(try await eventually { try memberStatus(bPort)?["state"] as? String == "standby" }, "\(b.stderr)")

        #expect(httpGet(aPort, "/healthz")?.status == 200)
        #expect(httpGet(bPort, "/healthz")?.status == 200)
        #expect(httpGet(bPort, "/active")?.status == 503)
        #expect(httpGet(bPort, "/active")?.body == "standby\n")

        let aStatus = try #require(try memberStatus(aPort))
        #expect(aStatus["group"] as? String == "g")
        #expect(aStatus["member"] as? String == "a")
        #expect(aStatus["state"] as? String == "active")
        #expect(aStatus["token"] as? Int == aToken)
        let group = try #require(aStatus["groupStatus"] as? [String: Any])
        #expect(group["lastToken"] as? Int == aToken)
        // Schema version 1 carries every field: what a member does not have is `null`, not a missing key.
        let bStatus = try #require(try memberStatus(bPort))
        #expect(bStatus["token"] is NSNull && bStatus["error"] is NSNull, "\(bStatus)")
        let bEntry = try #require((group["members"] as? [[String: Any]])?.first { $0["id"] as? String == "b" })
        #expect(bEntry["token"] is NSNull, "\(bEntry)")
        let rows = try #require(group["members"] as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["id"] as? String }) == ["a", "b"])
        #expect(httpGet(aPort, "/active")?.body == "active token=\(aToken)\n")

        let aMetrics = try #require(httpGet(aPort, "/metrics")).body
        #expect(sample(aMetrics, "understudy_active", ["member": "a", "group": "g"]) == 1)
        #expect(sample(aMetrics, "understudy_fencing_token", ["member": "a"]) == Double(aToken))
        #expect(sample(aMetrics, "understudy_transitions_total", ["member": "a", "reason": "elected"]) == 1)
        #expect(sample(aMetrics, "understudy_transitions_total", ["member": "a", "reason": "shutdown"]) == 0)
        #expect(sample(aMetrics, "understudy_store_errors_total", ["member": "a"]) == 0)
        #expect(try #require(sample(aMetrics, "understudy_heartbeat_round_trip_seconds_count", ["member": "a"])) > 0)
        #expect(aMetrics.contains("understudy_heartbeat_round_trip_seconds_bucket{"))
        let bMetrics = try #require(httpGet(bPort, "/metrics")).body
        #expect(sample(bMetrics, "understudy_active", ["member": "b"]) == 0)
        #expect(sample(bMetrics, "understudy_fencing_token", ["member": "b"]) == 0)
        #expect(sample(bMetrics, "understudy_transitions_total", ["member": "b", "reason": "elected"]) == 0)

        // Handover: a leaves, stops serving, and b's endpoints now say it is the active one.
        a.signal(SIGTERM)
        #expect(try await a.exitStatus() == 0)
        #expect(httpGet(aPort, "/healthz") == nil, "a still serves HTTP after leaving")
        let bToken = try await commandToken("b")
        #expect(bToken > aToken)
        #expect(httpGet(bPort, "/active")?.status == 200, "\(b.stderr)")
        #expect(try memberStatus(bPort)?["token"] as? Int == bToken)
        let handedOver = try #require(httpGet(bPort, "/metrics")).body
        #expect(sample(handedOver, "understudy_active", ["member": "b"]) == 1)
        #expect(sample(handedOver, "understudy_fencing_token", ["member": "b"]) == Double(bToken))
        #expect(sample(handedOver, "understudy_transitions_total", ["member": "b", "reason": "elected"]) == 1)

        b.signal(SIGTERM)
        #expect(try await b.exitStatus() == 0)
        #expect(!scratch.lines("log").contains { $0.hasPrefix("OVERLAP") })
    }

    /// A port another socket listens on: one line on stderr and exit code 70, before joining the group.
    @Test func test_http_portInUse_exits70_withOneLine() async throws {
        let scratch = try Scratch()
        let (socket, port) = try #require(listeningSocket())
        defer { close(socket) }
        let result = try await understudy(
            ["run", "--group", "g", "--store", scratch.file("store.db"), "--http", "127.0.0.1:\(port)", "--", "sleep", "60"],
            in: scratch
        )
        #expect(result.status == 70, "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stderr.contains("127.0.0.1:\(port)") && result.stderr.contains("in use"), "\(result.stderr)")
    }

    /// A malformed HOST:PORT is a usage error: one line naming --http, exit code 64.
    @Test(arguments: [
        "nonsense", "127.0.0.1", "127.0.0.1:", ":9090", "127.0.0.1:65536", "127.0.0.1:http", "::1:9090", "[::1]9090",
        "[::1:9090", "local host:9090", "127.0.0.1:+80",
    ])
    func test_http_malformedAddress_isUsageError(_ address: String) async throws {
        let scratch = try Scratch()
        let result = try await understudy(
            ["run", "--group", "g", "--store", scratch.file("store.db"), "--http", address, "--", "sleep", "60"],
            in: scratch
        )
        #expect(result.status == 64, "\(address): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(address): \(result.stderr)")
        #expect(result.stderr.contains("--http"), "\(address): \(result.stderr)")
    }

    /// `/status` is served from what the member already knows, so a flood of requests (wrk, 64 connections, in
    /// a store of 3,000 groups that each read used to load whole) never delays a renewal: the member stays
    /// active on its first token.
    @Test func test_statusFlood_neverDelaysARenewal() async throws {
        let scratch = try Scratch()
        let store = scratch.file("store.db")
        let member = try Launched(
            ["run", "--group", "g", "--store", store, "--http", "127.0.0.1:0", "--heartbeat", "100ms", "--activation", "500ms", "--", "sleep", "120"],
            in: scratch, name: "member"
        )
        defer { member.signal(SIGTERM) }
        let port = try await servedPort(member)
        #expect(try await eventually { member.stderr.contains("activated") })
        let crowd = """
            import sqlite3; c = sqlite3.connect('\(store)', timeout=10)
            c.executemany("INSERT INTO groups (name, active_goal, last_token, next_join) VALUES (?, 1, 0, 2)", [("crowd-%d" % i,) for i in range(3000)])
            c.executemany("INSERT INTO leases VALUES (?, 0, NULL, NULL, NULL, NULL)", [("crowd-%d" % i,) for i in range(3000)])
            c.executemany("INSERT INTO members VALUES (?, 'm', 'i', 50, 'h', 1, 1, 'standby', 0, 9000000000000000000)", [("crowd-%d" % i,) for i in range(3000)])
            c.commit()
            """
        let python = try Launched(["/usr/bin/env", "python3", "-c", crowd], in: scratch, name: "python", executable: true)
        #expect(try await python.exitStatus() == 0, "\(python.stderr)")
        let wrk = try Launched(
            ["/usr/bin/env", "wrk", "-t", "2", "-c", "64", "-d", "4s", "http://127.0.0.1:\(port)/status"], in: scratch, name: "wrk", executable: true
        )
        #expect(try await wrk.exitStatus(within: .seconds(30)) == 0, "\(wrk.stderr)")
        let requests = wrk.stdout.split(separator: "\n").first { $0.contains("requests in") }
        #expect(requests != nil, "\(wrk.stdout)")
        #expect(member.process.isRunning)
        #expect(!member.stderr.contains("deactivated"), "\(member.stderr)")
        #expect(member.stderr.components(separatedBy: "activated group=").count == 2, "\(member.stderr)")
    }
}

/// The port of the `serving HTTP … address=127.0.0.1:PORT` line that `understudy run --http 127.0.0.1:0` logs.
private func servedPort(_ launched: Launched) async throws -> Int {
    func port() -> Int? {
        guard let line = launched.stderr.split(separator: "\n").first(where: { $0.contains("serving HTTP") }),
              let field = line.split(separator: " ").first(where: { $0.hasPrefix("address=127.0.0.1:") })
        else { return nil }
        return Int(field.dropFirst("address=127.0.0.1:".count))
    }
    #expect(try await eventually { port() != nil }, "no `serving HTTP` line: \(launched.stderr)")
    return try #require(port())
}

/// The JSON of `GET /status`, or `nil` when the endpoint does not answer 200.
private func memberStatus(_ port: Int) throws -> [String: Any]? {
    guard let response = httpGet(port, "/status"), response.status == 200 else { return nil }
    return try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
}

/// One `GET` on 127.0.0.1 over a fresh connection; `nil` when nothing answers within 2 s.
func httpGet(_ port: Int, _ path: String) -> (status: Int, body: String)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = loopback(port: port)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { break }
        response += buffer[..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let headerEnd = text.range(of: "\r\n\r\n"),
          let statusField = text[..<headerEnd.lowerBound].split(separator: " ").dropFirst().first,
          let status = Int(statusField)
    else { return nil }
    return (status, String(text[headerEnd.upperBound...]))
}

/// A socket listening on 127.0.0.1 at a port the system picked, and that port.
func listeningSocket() -> (Int32, Int)? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var address = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    guard listening else {
        close(fd)
        return nil
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

private func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return address
}

/// The value of the Prometheus sample `name{…}` whose labels include `labels`.
private func sample(_ exposition: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " ") else { continue }
        let series = line[..<space]
        let seriesName = series.prefix { $0 != "{" }
        guard seriesName == name, labels.allSatisfy({ series.contains("\($0.key)=\"\($0.value)\"") }) else { continue }
        return Double(line[line.index(after: space)...])
    }
    return nil
}
