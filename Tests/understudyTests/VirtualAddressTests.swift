import Foundation
import Testing

/// The virtual-address example (examples/virtual-address/vip) moved by `on-activate`/`on-deactivate` hooks
/// between two hosts: two network namespaces joined by a veth pair, one agent each.
@Suite(.serialized)
struct VirtualAddressTests {
    /// Two namespaces `NAMEa` and `NAMEb`, 192.0.2.1 and 192.0.2.2 (TEST-NET-1) on a veth pair; deleted with the value.
    final class Hosts {
        let name = "ustest\(UInt16.random(in: 0...UInt16.max))"
        var namespaces: [String] { [name + "a", name + "b"] }
        func device(_ index: Int) -> String { name + (index == 0 ? "va" : "vb") }

        init() throws {
            let commands = [
                ["netns", "add", namespaces[0]], ["netns", "add", namespaces[1]],
                ["link", "add", device(0), "type", "veth", "peer", "name", device(1)],
                ["link", "set", device(0), "netns", namespaces[0]], ["link", "set", device(1), "netns", namespaces[1]],
                ["-n", namespaces[0], "address", "add", "192.0.2.1/24", "dev", device(0)],
                ["-n", namespaces[1], "address", "add", "192.0.2.2/24", "dev", device(1)],
                ["-n", namespaces[0], "link", "set", device(0), "up"], ["-n", namespaces[1], "link", "set", device(1), "up"],
                ["-n", namespaces[0], "link", "set", "lo", "up"], ["-n", namespaces[1], "link", "set", "lo", "up"],
            ]
            for arguments in commands {
                let ip = Process()
                ip.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                ip.arguments = arguments
                try ip.run()
                ip.waitUntilExit()
                guard ip.terminationStatus == 0 else { throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "ip \(arguments.joined(separator: " ")) failed (root and iproute2 needed)"]) }
            }
        }

        /// The addresses of a namespace's veth device.
        func addresses(_ index: Int) -> String {
            let ip = Process()
            let pipe = Pipe()
            ip.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            ip.arguments = ["-n", namespaces[index], "-brief", "address", "show", "dev", device(index)]
            ip.standardOutput = pipe
            guard (try? ip.run()) != nil else { return "" }
            ip.waitUntilExit()
            return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        }

        deinit {
            for namespace in namespaces {
                let ip = Process()
                ip.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                ip.arguments = ["netns", "delete", namespace]
                try? ip.run()
                ip.waitUntilExit()
            }
        }
    }

    /// The active's namespace holds 192.0.2.10 and serves on it; after a drain the address moves to the other
    /// namespace with the service, and a client on the first host reaches the new active through the same address.
    @Test func test_hooks_moveTheVirtualAddress_toTheNewActive() async throws {
        let hosts = try Hosts()
        let first = try AgentHarness(name: "a")
        let second = try AgentHarness(scratch: first.scratch, name: "b")
        let vip = repositoryFile("examples/virtual-address/vip")
        for (index, harness) in [first, second].enumerated() {
            let namespace = hosts.namespaces[index]
            let site = first.scratch.file("site-\(index)")
            try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
            try (index == 0 ? "a" : "b").write(toFile: site + "/who", atomically: true, encoding: .utf8)
            try harness.write("""
                store = "store.db"
                control = "\(first.scratch.file("\(harness.name).sock"))"

                [[member]]
                group = "vip"
                id = "\(index == 0 ? "a" : "b")"
                weight = \(index == 0 ? 100 : 10)
                command = ["/usr/sbin/ip", "netns", "exec", "\(namespace)", "python3", "-m", "http.server", "--bind", "192.0.2.10", "--directory", "\(site)", "8080"]
                on-activate = "/usr/sbin/ip netns exec \(namespace) \(vip) up 192.0.2.10/24 \(hosts.device(index))"
                on-deactivate = "/usr/sbin/ip netns exec \(namespace) \(vip) down 192.0.2.10/24 \(hosts.device(index))"
                stop-grace = "2s"
                """)
        }
        /// What a client in namespace `index` reads from http://192.0.2.10:8080/who.
        func who(from index: Int) async throws -> String {
            let client = try Launched(
                ["/usr/sbin/ip", "netns", "exec", hosts.namespaces[index], "python3", "-c",
                 "import urllib.request; print(urllib.request.urlopen('http://192.0.2.10:8080/who', timeout=2).read().decode(), end='')"],
                in: first.scratch, name: "client-\(UInt32.random(in: 0...UInt32.max))", executable: true
            )
            _ = try await client.exitStatus(within: .seconds(10))
            return client.stdout
        }

        let agentA = try first.startAgent()
        #expect(try await eventually { hosts.addresses(0).contains("192.0.2.10/24") }, "\(agentA.stderr)")
        let agentB = try second.startAgent()
        #expect(try await eventuallyAsync(timeout: .seconds(15)) { try await who(from: 1) == "a" }, "\(agentA.stderr)")
        #expect(!hosts.addresses(1).contains("192.0.2.10"))

        let drain = try await understudy(["agent", "drain", "vip", "--config", first.config], in: first.scratch)
        #expect(drain.status == 0, "\(drain)")
        #expect(try await eventually { hosts.addresses(1).contains("192.0.2.10/24") }, "\(agentB.stderr)")
        #expect(try await eventuallyAsync(timeout: .seconds(15)) { try await who(from: 0) == "b" }, "\(agentB.stderr)")
        #expect(!hosts.addresses(0).contains("192.0.2.10"), "both hosts hold the address: \(hosts.addresses(0))")

        for agent in [agentA, agentB] { agent.signal(SIGTERM) }
        for agent in [agentA, agentB] { #expect(try await agent.exitStatus() == 0) }
        #expect(!hosts.addresses(1).contains("192.0.2.10"), "the address outlived the active")
    }
}
