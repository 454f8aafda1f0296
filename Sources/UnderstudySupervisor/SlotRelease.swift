import Foundation
import UnderstudyCore
import UnderstudyStore

/// What the one-shot release mode (`understudy __release-slot`) needs to release one activation's slot, passed
/// by the supervisor to its watchdogs on a descriptor.
package struct SlotRelease: Codable, Sendable {
    /// The store's location, with credentials.
    package var store: String
    package var group: String
    package var activeGoal: Int
    package var activationNanoseconds: Int64
    package var member: String
    package var incarnation: String
    package var weight: Int
    package var host: String
    package var pid: Int32
    package var token: UInt64
    package var logFormat: String
    /// The partition whose lease this is, in a partitioned group (`activeGoal` is then the number of partitions).
    package var partition: Int?
    /// Why the watchdog released, for the log line.
    package var reason: String?

    /// The heartbeat that leaves the group releasing the token, sent now on the host's boot-time clock, the one the
    /// member's heartbeats were sent on: the dead incarnation's row then bounds the store clock by it, where a
    /// heartbeat without a send instant moves a PostgreSQL store clock by the wall clock's delta, a step included.
    package func heartbeat() throws(SupervisorError) -> Heartbeat {
        do {
            return Heartbeat(
                group: try GroupName(group),
                activeGoal: activeGoal,
                activationInterval: .nanoseconds(activationNanoseconds),
                member: try MemberInfo(id: MemberID(member), incarnation: incarnation, weight: weight, host: host, pid: pid),
                phase: .stopping,
                intent: .leave(releasing: FencingToken(rawValue: token)),
                sentAt: MonotonicClock.now()
            )
        } catch {
            throw SupervisorError(.invalidConfiguration, error.description)
        }
    }

    /// In a partitioned group: the heartbeat that releases the partition and leaves the group, so the others take
    /// the dead member's partitions at once rather than when its membership expires.
    package func partitionHeartbeat() throws(SupervisorError) -> PartitionHeartbeat? {
        guard let partition else { return nil }
        let heartbeat = try heartbeat()
        return PartitionHeartbeat(
            group: heartbeat.group,
            partitions: activeGoal,
            activationInterval: heartbeat.activationInterval,
            member: heartbeat.member,
            phase: .stopping,
            operations: [.release(partition, FencingToken(rawValue: token))],
            leaving: true,
            sentAt: heartbeat.sentAt
        )
    }

    package var bytes: [UInt8] { Array((try? JSONEncoder().encode(self)) ?? Data()) }

    /// Reads and closes `descriptor`.
    package static func read(from descriptor: Int32) -> SlotRelease? {
        defer { close(descriptor) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 4_096)
        var offset: off_t = 0
        while true {
            let count = pread(descriptor, &buffer, buffer.count, offset)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            data.append(contentsOf: buffer[..<count])
            offset += off_t(count)
        }
        return try? JSONDecoder().decode(SlotRelease.self, from: data)
    }
}
