import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Understudy
import UnderstudyCore

struct ProcessFootprint: Codable, Sendable {
    var role: String
    var cpuPercentOfOneCore: Double
    var rssMeanMB: Double
    var rssMaxMB: Double
    var pssMeanMB: Double
}

struct FootprintReport: Codable, Sendable {
    var machine: MachineInfo
    var store: String
    var seconds: Double
    var samples: Int
    var processes: [ProcessFootprint]
}

struct Footprint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CPU and RSS of idle `understudy run` members (one group): the active one, its watchdog, and a standby.",
        discussion: """
            The binary's pages are first dropped from the page cache, so it loads as after a deploy or a reboot: \
            how the file was last written (by the linker, or by cp) decides the size of its page-cache folios, and \
            a kernel that maps whole large folios on a fault then counts more of the file as resident.
            """
    )

    @Option(help: "sqlite, postgres or a store URL.")
    var store = "sqlite"

    @OptionGroup var supervisor: SupervisorOptions

    @Option(help: "Measurement window.")
    var duration = "60s"

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        Cleanup.shared.installSignalHandlers()
        defer { Cleanup.shared.runAll() }
        let binary = try Binaries.understudy(supervisor.understudy)
        try dropFromPageCache(binary)
        let child = try Binaries.child()
        let target = try BenchStore.resolve(store)
        let directory = try makeTemporaryDirectory("understudy-bench-footprint")
        let stamps = StampFile(path: "\(directory)/stamps.txt")
        func start(_ label: String) throws -> pid_t {
            try spawn([
                binary, "run", "--group", "footprint", "--store", target.url, "--id", label,
                "--heartbeat", supervisor.heartbeat, "--activation", supervisor.activation, "--", child, stamps.path, label,
            ], log: "\(directory)/\(label).log")
        }
        let active = try start("active")
        guard let stamp = stamps.wait(after: -1, timeout: .seconds(30))?.stamp else { throw BenchError("the member did not activate") }
        let standby = try start("standby")
        guard let watchdog = parentPID(stamp.pid) else { throw BenchError("cannot find the watchdog") }
        sleep(milliseconds: 3_000)
        let processes: [(String, pid_t)] = [("active supervisor", active), ("its watchdog", watchdog), ("standby supervisor", standby)]
        let window = try parseDuration(duration)
        note("footprint: measuring for \(duration)")
        let cpuBefore = processes.map { cpuSeconds($0.1) ?? 0 }
        let start = boottime()
        var rss = Array(repeating: [Double](), count: processes.count)
        var pss = Array(repeating: [Double](), count: processes.count)
        while Double(boottime() - start) / 1e6 < window.milliseconds {
            for (index, process) in processes.enumerated() {
                rss[index].append(residentMB(process.1) ?? 0)
                pss[index].append(proportionalMB(process.1) ?? 0)
            }
            sleep(milliseconds: 1_000)
        }
        let seconds = Double(boottime() - start) / 1e9
        let report = FootprintReport(
            machine: .current(), store: target.kind, seconds: seconds, samples: rss[0].count,
            processes: processes.enumerated().map { index, process in
                ProcessFootprint(
                    role: process.0, cpuPercentOfOneCore: ((cpuSeconds(process.1) ?? 0) - cpuBefore[index]) / seconds * 100,
                    rssMeanMB: rss[index].reduce(0, +) / Double(rss[index].count), rssMaxMB: rss[index].max() ?? 0,
                    pssMeanMB: pss[index].reduce(0, +) / Double(pss[index].count)
                )
            }
        )
        for pid in [standby, active] {
            kill(pid, SIGTERM)
            reap(pid)
        }
        if json {
            try printJSON(report)
            return
        }
        print("machine: \(report.machine.summary)")
        print("one group on \(report.store), I = \(supervisor.heartbeat), T = \(supervisor.activation); \(String(format: "%.0f", seconds)) s, RSS sampled \(report.samples) times\n")
        print(table(["process", "CPU % of one core", "RSS mean MB", "RSS max MB", "PSS mean MB"], report.processes.map {
            [
                $0.role, String(format: "%.2f", $0.cpuPercentOfOneCore), String(format: "%.1f", $0.rssMeanMB),
                String(format: "%.1f", $0.rssMaxMB), String(format: "%.1f", $0.pssMeanMB),
            ]
        }))
    }
}
