// swift-tools-version: 6.1
import PackageDescription

// Benchmarks live in their own package so that `swift test` at the root never builds their dependencies.
// Build the root's release binary first (`swift build -c release --product understudy` at the root), then see
// docs/benchmarks.md for one command per figure.
let package = Package(
    name: "UnderstudyBenchmarks",
    dependencies: [
        .package(name: "Understudy", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Starts real `understudy` processes against real stores, injects faults and prints distributions.
        .executableTarget(
            name: "understudy-bench",
            dependencies: [
                .product(name: "UnderstudyCore", package: "Understudy"),
                .product(name: "Understudy", package: "Understudy"),
                .product(name: "UnderstudyStore", package: "Understudy"),
                .product(name: "UnderstudySQLite", package: "Understudy"),
                .product(name: "UnderstudyPostgres", package: "Understudy"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                // The continuity benchmark's feed on a notification channel, as the examples' feed.
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // The supervised child: stamps its own start on CLOCK_BOOTTIME, then waits to be killed. Plain C, so
        // process start-up adds no Swift runtime time to the measurement.
        .executableTarget(name: "understudy-bench-child"),
        // Micro-benchmarks of the pure core (ordo-one/benchmark): `swift package benchmark`.
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "UnderstudyCore", package: "Understudy"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
