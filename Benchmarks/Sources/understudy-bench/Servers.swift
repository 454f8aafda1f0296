import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A store for a benchmark: `sqlite` (a fresh file), `postgres` (a throwaway server on loopback) or a URL.
struct BenchStore: Sendable {
    /// `SQLite` or `PostgreSQL`.
    var kind: String
    var url: String

    /// Resolves `spec`; servers it starts are stopped by ``Cleanup``.
    static func resolve(_ spec: String) throws -> BenchStore {
        switch spec {
        case "sqlite":
            let directory = try makeTemporaryDirectory("understudy-bench-sqlite")
            return BenchStore(kind: "SQLite", url: "sqlite://" + directory + "/bench.db")
        case "postgres", "postgresql":
            return BenchStore(kind: "PostgreSQL", url: try ThrowawayPostgres.start())
        default:
            return BenchStore(kind: spec.hasPrefix("postgres") ? "PostgreSQL" : "SQLite", url: spec)
        }
    }
}

/// A PostgreSQL server in a temporary directory on loopback, as `scripts/test` starts one; as the `postgres`
/// user when running as root. fsync stays on (the default), as in production.
enum ThrowawayPostgres {
    /// - Parameter settings: extra `name=value` server settings.
    static func start(settings: [String] = []) throws -> String {
        guard let bin = try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")
            .sorted(by: { $0.compare($1, options: .numeric) == .orderedAscending }).last
            .map({ "/usr/lib/postgresql/\($0)/bin" })
        else { throw BenchError("PostgreSQL is not installed: apt-get install postgresql") }
        let directory = try makeTemporaryDirectory("understudy-bench-pg")
        chmod(directory, 0o755)
        var asUser: [String] = []
        if getuid() == 0 {
            if try runCommand(["/usr/bin/id", "postgres"], check: false).status != 0 {
                try runCommand(["/usr/sbin/useradd", "--system", "--no-create-home", "postgres"])
            }
            try runCommand(["/bin/chown", "postgres", directory])
            asUser = ["/usr/sbin/runuser", "-u", "postgres", "--"]
        }
        let port = freePort()
        note("starting PostgreSQL on 127.0.0.1:\(port) in \(directory)")
        try runCommand(asUser + ["\(bin)/initdb", "-D", "\(directory)/data", "-U", "understudy", "--auth=trust"])
        let control = asUser + [
            "\(bin)/pg_ctl", "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-o",
            "-c listen_addresses=127.0.0.1 -p \(port) -c unix_socket_directories=\(directory) -c max_connections=300" + settings.map { " -c \($0)" }.joined(),
        ]
        Cleanup.shared.add { _ = try? runCommand(control + ["stop", "-m", "immediate"], check: false) }
        try runCommand(control + ["start"])
        return "postgres://understudy@127.0.0.1:\(port)/postgres?sslmode=disable"
    }
}

/// A single-node etcd on loopback, installed from Debian's packages when missing.
struct Etcd {
    var endpoint: String
    var etcdctl: String

    static func start() throws -> Etcd {
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") || !FileManager.default.isExecutableFile(atPath: "/usr/bin/etcdctl") {
            guard getuid() == 0 else { throw BenchError("etcd is missing: apt-get install etcd-server etcd-client (or run as root)") }
            note("installing etcd-server and etcd-client")
            try runCommand(["/usr/bin/apt-get", "update", "-qq"])
            try runCommand(["/usr/bin/apt-get", "install", "-y", "-qq", "etcd-server", "etcd-client"], environment: ["DEBIAN_FRONTEND": "noninteractive"])
            // Debian's package starts a system etcd on the default ports; the benchmark uses its own.
            _ = try? runCommand(["/usr/bin/systemctl", "stop", "etcd"], check: false)
        }
        let directory = try makeTemporaryDirectory("understudy-bench-etcd")
        let clientPort = freePort()
        let peerPort = freePort()
        let endpoint = "http://127.0.0.1:\(clientPort)"
        // A single node never elects, so a short raft heartbeat is safe; it lowers etcd's minimum lease TTL
        // (1.5 x election timeout, rounded up to whole seconds) to 1 s, the smallest `--ttl` etcdctl accepts.
        let pid = try spawn([
            "/usr/bin/etcd", "--name", "bench", "--data-dir", "\(directory)/data",
            "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
            "--listen-peer-urls", "http://127.0.0.1:\(peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(peerPort)",
            "--initial-cluster", "bench=http://127.0.0.1:\(peerPort)",
            "--heartbeat-interval", "10", "--election-timeout", "100",
        ], log: "\(directory)/etcd.log")
        Cleanup.shared.add {
            kill(pid, SIGKILL)
            reap(pid)
        }
        note("starting etcd on \(endpoint)")
        let etcd = Etcd(endpoint: endpoint, etcdctl: "/usr/bin/etcdctl")
        for _ in 0..<100 {
            if (try? runCommand([etcd.etcdctl, "--endpoints", endpoint, "endpoint", "health"], environment: ["ETCDCTL_API": "3"], check: false).status) == 0 {
                return etcd
            }
            sleep(milliseconds: 100)
        }
        throw BenchError("etcd did not become healthy; see \(directory)/etcd.log")
    }
}
