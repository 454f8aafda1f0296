import Foundation
import Testing
import Understudy
import UnderstudyCore
import UnderstudyPostgres
import UnderstudySQLite
import UnderstudyStore
import UnderstudyStoreConformance

/// A store with every capability: leases, partition leases, the directory, announcements, work queues and checkpoints.
typealias AnnouncingStore = LeaseStore & PartitionLeaseStore & GroupDirectory & ChangeAnnouncing & JobQueueStore & CheckpointStore

/// The backends this package has, each opened on the clock of the check that runs on it.
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case inMemory = "in-memory"
    case sqlite
    case postgres

    var testDescription: String { rawValue }

    /// `count` handles on one store of this backend (separate connections, as separate processes would have).
    func makeStores(count: Int = 1, clock: ManualClock, directory: TemporaryDirectory) async throws -> [any AnnouncingStore] {
        switch self {
        case .inMemory:
            let store = InMemoryStore(clock: clock.read, wallMicroseconds: { 0 })
            return Array(repeating: store, count: count)
        case .sqlite:
            let stores = try (0..<count).map { _ in
                try SQLiteStore(path: directory.file("understudy.db"), clock: clock.host())
            }
            // A new file grants nothing for T (it may replace one whose leases still run); these tests start later.
            clock.advance(by: .seconds(600))
            return stores
        case .postgres:
            let url = try TestPostgres.freshSchemaURL()
            var stores: [any AnnouncingStore] = []
            for _ in 0..<count { stores.append(try await PostgresStore(url: url, clock: clock.read)) }
            // The ledger as the other backends apply it: no token floor, no wait after a new record (both have
            // tests of their own in PostgresHistoryTests).
            try await TestPostgres.withoutFloorOrHistory(url)
            return stores
        }
    }
}

/// Every backend runs every check of the conformance kit, one test case each.
@Suite("Store conformance", .timeLimit(.minutes(2)))
struct StoreConformanceTests {
    @Test(arguments: Backend.allCases, LeaseConformance.checks)
    func lease(_ backend: Backend, _ check: ConformanceCheck<any CoordinationStore>) async throws {
        try await run(check, on: backend) { $0 }
    }

    @Test(arguments: Backend.allCases, ChangeAnnouncementConformance.checks)
    func changeAnnouncement(_ backend: Backend, _ check: ConformanceCheck<any LeaseStore & ChangeAnnouncing>) async throws {
        try await run(check, on: backend) { $0 }
    }

    @Test(arguments: Backend.allCases, GroupDirectoryConformance.checks)
    func groupDirectory(_ backend: Backend, _ check: ConformanceCheck<any CoordinationStore>) async throws {
        try await run(check, on: backend) { $0 }
    }

    @Test(arguments: Backend.allCases, PartitionLeaseConformance.checks)
    func partitionLease(_ backend: Backend, _ check: ConformanceCheck<any PartitionedStore>) async throws {
        try await run(check, on: backend) { $0 }
    }

    @Test(arguments: Backend.allCases, JobQueueConformance.checks)
    func jobQueue(_ backend: Backend, _ check: ConformanceCheck<any JobQueueStore>) async throws {
        try await run(check, on: backend) { $0 }
    }

    @Test(arguments: Backend.allCases, CheckpointConformance.checks)
    func checkpoint(_ backend: Backend, _ check: ConformanceCheck<any CoordinationStore & CheckpointStore>) async throws {
        try await run(check, on: backend) { $0 }
    }

    private func run<Store>(
        _ check: ConformanceCheck<Store>,
        on backend: Backend,
        as capability: @escaping @Sendable (any AnnouncingStore) -> Store
    ) async throws {
        let directory = try TemporaryDirectory()
        try await check.run { count, clock in
            try await backend.makeStores(count: count, clock: clock, directory: directory).map(capability)
        }
    }
}
