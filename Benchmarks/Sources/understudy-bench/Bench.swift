import ArgumentParser

@main
struct UnderstudyBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "understudy-bench",
        abstract: "Benchmarks of Understudy on real processes and real stores (see docs/benchmarks.md).",
        subcommands: [Failover.self, Scale.self, Footprint.self, RoundTrip.self, QueueBenchmark.self, PartitionBenchmark.self, ContinuityBenchmark.self]
    )
}
