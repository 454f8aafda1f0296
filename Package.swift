// swift-tools-version: 6.1
import PackageDescription

// The release supervisor is a long-lived process beside every service it guards, so its idle footprint matters
// (docs/benchmarks.md, "Footprint"). On Linux it links the Swift runtime and Foundation statically instead of
// loading and relocating whole shared libraries it barely uses; with lld it packs its relocations and exports no
// symbols, so the dynamic loader neither rewrites nor searches megabytes of tables at start. It stays
// position-independent. Only the `understudy` executable has these (unsafe) flags, so the library products can
// still be used as dependencies.
let supervisorRelease = BuildSettingCondition.when(platforms: [.linux], configuration: .release)
let supervisorReleaseLinkerFlags = [
    "-static-stdlib", "-use-ld=lld",
    "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
    "-Xlinker", "--no-export-dynamic",
]

// Linux only: the watchdog, cgroups and the boot clock are Linux's (`Sources/CUnderstudyWatchdog` and
// `UnderstudyStore`'s clocks refuse to build elsewhere). The pure core and the simulator are portable Swift.
let package = Package(
    name: "Understudy",
    products: [
        .library(name: "UnderstudyCore", targets: ["UnderstudyCore"]),
        .library(name: "UnderstudyStore", targets: ["UnderstudyStore"]),
        .library(name: "UnderstudyStoreConformance", targets: ["UnderstudyStoreConformance"]),
        .library(name: "UnderstudySQLite", targets: ["UnderstudySQLite"]),
        .library(name: "UnderstudyPostgres", targets: ["UnderstudyPostgres"]),
        .library(name: "Understudy", targets: ["Understudy"]),
        .library(name: "UnderstudySupervisor", targets: ["UnderstudySupervisor"]),
        .library(name: "UnderstudyAgent", targets: ["UnderstudyAgent"]),
        .executable(name: "understudy", targets: ["understudy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", exact: "0.6.0"),
    ],
    targets: [
        // The layers, each depending only on those above it (docs/design.md):
        // 1. Sans-IO election, membership and lease logic. Depends on nothing.
        .target(name: "UnderstudyCore"),
        // Deterministic simulator: the real core against a simulated store, clock and faults.
        .target(name: "UnderstudySimulator", dependencies: ["UnderstudyCore"]),
        // 2. The store contract and its kit: capability protocols, errors, clocks, the heartbeat batcher, change
        //    subscribers and the in-memory backend.
        .target(name: "UnderstudyStore", dependencies: ["UnderstudyCore"]),
        //    The conformance kit: one suite of checks per capability, which every backend's tests run (Swift Testing).
        .target(name: "UnderstudyStoreConformance", dependencies: ["UnderstudyCore", "UnderstudyStore"]),
        // 3. One target per backend, so a user builds only the database client it uses.
        .target(
            name: "UnderstudySQLite",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "UnderstudyPostgres",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // 4. The runtime: a `Member` drives the core with real time and any store.
        .target(
            name: "Understudy",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "HeapModule", package: "swift-collections"),
            ]
        ),
        // The watchdog between a supervisor and its command: plain C, single-threaded, independent of Swift.
        .target(name: "CUnderstudyWatchdog"),
        // 5. Supervising commands under the watchdog, with hooks, status and HTTP routes: no process-wide side
        //    effects, so one process can supervise many.
        .target(
            name: "UnderstudySupervisor",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                "Understudy",
                "CUnderstudyWatchdog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // 5b. `understudy agent`: many supervisors from one TOML file, reloaded by difference, with a control
        //     socket and a live status page. The only target that reads TOML.
        .target(
            name: "UnderstudyAgent",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                "Understudy",
                "UnderstudySupervisor",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // 6. The `understudy` executable: commands, arguments, signals, exit codes and process set-up.
        .executableTarget(
            name: "understudy",
            dependencies: [
                "UnderstudyCore",
                "UnderstudyStore",
                "UnderstudySQLite",
                "UnderstudyPostgres",
                "Understudy",
                "UnderstudySupervisor",
                "UnderstudyAgent",
                "UnderstudySimulator",
                "CUnderstudyWatchdog",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: [.unsafeFlags(["-static-stdlib"], supervisorRelease)],
            linkerSettings: [.unsafeFlags(supervisorReleaseLinkerFlags, supervisorRelease)]
        ),
        .executableTarget(
            name: "singleton-job",
            dependencies: ["Understudy", "UnderstudySQLite"],
            path: "examples/singleton-job"
        ),
        // The examples' feed (a PostgreSQL notification channel, its generator and its listener) and their output lines.
        .target(
            name: "ExampleFeed",
            dependencies: [
                "Understudy", "UnderstudyPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/feed"
        ),
        // The continuity example: feed generator, publisher group members and checking sink, as subcommands.
        .executableTarget(
            name: "feed-publisher",
            dependencies: [
                "Understudy", "UnderstudyPostgres", "ExampleFeed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/feed-publisher",
            exclude: ["README.md"]
        ),
        // The parallel-data-state example: a current-value cache whose standbys are warm.
        .executableTarget(
            name: "value-cache",
            dependencies: [
                "Understudy", "UnderstudyPostgres", "ExampleFeed",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "examples/value-cache",
            exclude: ["README.md"]
        ),
        // A member process for the multi-process tests: logs each activation with its token.
        .executableTarget(
            name: "understudy-fixture",
            dependencies: ["Understudy", "UnderstudySQLite", "UnderstudyPostgres", .product(name: "Logging", package: "swift-log")],
            path: "Tests/Fixtures/understudy-fixture"
        ),
        .testTarget(name: "UnderstudyCoreTests", dependencies: ["UnderstudyCore"]),
        .testTarget(name: "UnderstudySimulatorTests", dependencies: ["UnderstudySimulator"]),
        .testTarget(
            name: "UnderstudyTests",
            dependencies: [
                "UnderstudyStore",
                "UnderstudyStoreConformance",
                "UnderstudySQLite",
                "UnderstudyPostgres",
                "Understudy",
                "UnderstudySupervisor",
                "UnderstudySimulator",
                "understudy-fixture",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "UnderstudyAgentTests", dependencies: ["UnderstudyAgent"]),
        .testTarget(name: "understudyTests", dependencies: ["understudy", "feed-publisher", "value-cache"]),
    ]
)
