import Foundation
import Logging
import Understudy
import UnderstudyCore
import UnderstudyStore
import UnderstudySupervisor

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
            let before = try await store.group(named: heartbeat.group)
            let held = before?.leases.contains { $0.holder == heartbeat.member.id && $0.token.rawValue == release.token } ?? false
            do {
                if let partitionHeartbeat = try release.partitionHeartbeat() {
                    _ = try await store.heartbeat(partitionHeartbeat)
                } else {
                    _ = try await store.heartbeat(heartbeat)
                }
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
        } catch let error as SupervisorError {
            logger.warning("cannot release the slot, it expires by itself", metadata: ["error": "\(error.message)"])
            return ExitStatus(error.kind).rawValue
        } catch {
            logger.warning("cannot release the slot, it expires by itself", metadata: ["error": "\(error)"])
            return ExitStatus.storeUnavailable.rawValue
        }
    }
}
