import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import Logging
import Testing
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudySupervisor

/// One process, one HTTP server, the routes of several members, each under a path of its own.
@Suite("Supervisor routes", .timeLimit(.minutes(1)))
struct SupervisorRoutesTests {
    @Test func manyMembers_eachAnswersUnderItsOwnPath() async throws {
        let store = InMemoryStore(clock: MonotonicClock.now, wallMicroseconds: { 0 })
        let members = try ["alpha", "beta"].map { name in
            try Member(group: MemberTests.configuration(name), id: MemberID(name), store: store)
        }
        let router = Router()
        for member in members {
            HTTPEndpoint.addRoutes(for: member, containment: .processGroup, to: router.group(RouterPath("members/\(member.id)")))
        }
        let endpoint = try await HTTPEndpoint.start(on: HTTPAddress(host: "127.0.0.1", port: 0), router: router, logger: Logger(label: "test"))
        let runs = members.map { member in Task { try await member.run() } }
        defer { runs.forEach { $0.cancel() } }

        for member in members {
            #expect(try await waitUntil { try await Self.get(endpoint, "/members/\(member.id)/active").status == 200 })
            let status = try await Self.get(endpoint, "/members/\(member.id)/status")
            let document = try #require(try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any])
            #expect(document["member"] as? String == member.id.rawValue)
            #expect(document["group"] as? String == member.configuration.name.rawValue)
            #expect(document["state"] as? String == "active")
        }
        #expect(try await Self.get(endpoint, "/members/gamma/status").status == 404)
        for member in members { member.leave() }
        for run in runs { try await run.value }
        #expect(try await Self.get(endpoint, "/members/alpha/healthz").status == 503)
        await endpoint.stop()
    }

    static func get(_ endpoint: HTTPEndpoint, _ path: String) async throws -> (status: Int, body: String) {
        let url = try #require(URL(string: "http://\(endpoint.boundAddress)\(path)"))
        let (data, response) = try await URLSession.shared.data(from: url)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }
}
