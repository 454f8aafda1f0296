import Foundation
import Logging
import Understudy
import UnderstudyCore

/// `understudy __release-slot`: the watchdog's one-shot release of a slot, run once it has killed the tree of a
/// supervisor that died or froze, and proven it gone (proof-of-death failover).
///
/// It reads a ``SlotRelease`` from descriptor 3 (an anonymous file: the store's credentials never appear in
/// arguments or the environment) and sends one heartbeat that leaves the group releasing the token. The store
/// makes that a compare-and-set on the member's incarnation and token: if the lease moved on (another
/// incarnation of the id, another token) nothing changes. If the store cannot be reached within T, the lease
/// simply expires.
enum ReleaseSlot {
    /// The first argument that runs this mode.
    static let argument = "__release-slot"

    /// Releases the slot described on descriptor 3; returns the exit status.
    static func main() async -> Int32 {
        guard let release = SlotRelease.read(from: 3) else {
            printError("understudy: __release-slot: no release description on descriptor 3")
            return ExitStatus.usage.rawValue
        }
        var logger = Logger(label: "understudy") { _ in LineLogHandler(format: LogFormat(rawValue: release.logFormat) ?? .text) }
        logger[metadataKey: "group"] = "\(release.group)"
        logger[metadataKey: "member"] = "\(release.member)"
        logger[metadataKey: "token"] = "\(release.token)"
        logger[metadataKey: "reason"] = "\(release.reason ?? "the supervisor died or froze")"
        // Past T the lease has expired anyway: never hang on an unreachable store.
        Task { [logger] in
            try? await Task.sleep(for: .nanoseconds(release.activationNanoseconds))
            logger.warning("cannot release the slot within T, it expires by itself", metadata: ["error": "the store did not answer"])
            exit(ExitStatus.storeUnavailable.rawValue)
        }
        do {
            let heartbeat = try release.heartbeat()
            let store = try await StoreLocation.parse(release.store).openForWriting()
            let before = try await store.group(heartbeat.group)
            let held = before?.leases.contains { $0.holder == heartbeat.member.id && $0.token.rawValue == release.token } ?? false
            do {
                _ = try await store.heartbeat(heartbeat)
                if held {
                    logger.notice("released the slot: the command's tree is dead")
                } else {
                    logger.notice("nothing to release: the lease had moved on")
                }
            } catch is HeartbeatRejection {
                logger.notice("nothing to release: the member id lives on in another incarnation")
            }
            try? await store.close()
            return 0
        } catch let error as CLIError {
            logger.warning("cannot release the slot, it expires by itself", metadata: ["error": "\(error.message)"])
            return error.status.rawValue
        } catch {
            logger.warning("cannot release the slot, it expires by itself", metadata: ["error": "\(error)"])
            return ExitStatus.storeUnavailable.rawValue
        }
    }
}

/// What ``ReleaseSlot`` needs to release one activation's slot, passed by the supervisor to its watchdogs.
struct SlotRelease: Codable, Sendable {
    /// The store's location, with credentials.
    var store: String
    var group: String
    var activeGoal: Int
    var activationNanoseconds: Int64
    var member: String
    var incarnation: String
    var weight: Int
    var host: String
    var pid: Int32
    var token: UInt64
    var logFormat: String
    /// Why the watchdog released, for the log line.
    var reason: String?

    /// The heartbeat that leaves the group releasing the token, sent now on the host's boot-time clock, the one the
    /// member's heartbeats were sent on: the dead incarnation's row then bounds the store clock by it, where a
    /// heartbeat without a send instant moves a PostgreSQL store clock by the wall clock's delta, a step included.
    func heartbeat() throws(CLIError) -> Heartbeat {
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
            throw CLIError(.invalidConfiguration, error.description)
        }
    }

    var bytes: [UInt8] { Array((try? JSONEncoder().encode(self)) ?? Data()) }

    /// Reads and closes `descriptor`.
    static func read(from descriptor: Int32) -> SlotRelease? {
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
