import CUnderstudyWatchdog
import Foundation
import Synchronization

/// How `understudy run` holds COMMAND's whole process tree, so that it can kill every process of it and prove
/// that none is left before the slot is released.
///
/// - ``cgroup(parent:)``: each command (and each hook) runs in a cgroup v2 leaf of its own, made under this
///   process's cgroup. `cgroup.kill` kills every process in it, whatever it did (`setsid`, double fork), and
///   `cgroup.events` saying `populated 0` proves they are gone. Needs write access to this process's cgroup
///   (root, or a delegated subtree such as systemd's `Delegate=yes`).
/// - ``processGroup``: the fallback. The watchdog, its guard and the supervisor are child subreapers, so a
///   process that leaves COMMAND's process group (`setsid`, daemonizing) is still reparented to one of them
///   and killed; but if the supervisor, the watchdog and the guard all die at once, such a process survives.
public enum Containment: Sendable, Equatable, CustomStringConvertible {
    case cgroup(parent: String)
    case processGroup

    /// `--containment`.
    public enum Choice: String, CaseIterable, Sendable {
        case auto
        case cgroup
        case processGroup = "process-group"
    }

    public var description: String {
        switch self {
        case .cgroup: "cgroup"
        case .processGroup: "process-group"
        }
    }

    /// The containment `choice` asks for; `auto` is a cgroup when one can be made. For ``processGroup`` it makes
    /// this process a child subreaper (process-wide, and the same for every supervisor in it), so orphans of a
    /// dead watchdog's tree are reparented here, to be killed.
    ///
    /// - Throws: ``SupervisorError`` with ``SupervisorError/Kind/invalidConfiguration`` when `cgroup` is asked for and none can be made.
    public static func choose(_ choice: Choice) throws(SupervisorError) -> Containment {
        switch choice {
        case .processGroup:
            return try becomeSubreaper()
        case .auto:
            guard let parent = ownCgroup() else { return try becomeSubreaper() }
            return .cgroup(parent: parent)
        case .cgroup:
            guard let parent = ownCgroup() else {
                throw SupervisorError(
                    .invalidConfiguration,
                    "--containment cgroup: cannot make a cgroup v2 leaf under this process's cgroup (run as root, or in a delegated subtree)"
                )
            }
            return .cgroup(parent: parent)
        }
    }

    private static func becomeSubreaper() throws(SupervisorError) -> Containment {
        guard understudy_set_subreaper() == 0 else {
            throw SupervisorError(.invalidConfiguration, "cannot become a child subreaper: \(String(cString: strerror(errno)))")
        }
        return .processGroup
    }

    /// This process's cgroup v2 directory, if leaves can be made in it and killed (`cgroup.kill`, Linux 5.14).
    static func ownCgroup() -> String? {
        guard let mountinfo = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
              let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let line = membership.split(separator: "\n").first(where: { $0.hasPrefix("0::") })
        else { return nil }
        let path = String(line.dropFirst(3))
        // mountinfo: ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPEROPTIONS
        for mount in mountinfo.split(separator: "\n") {
            let halves = mount.components(separatedBy: " - ")
            guard halves.count == 2, halves[1].hasPrefix("cgroup2 ") else { continue }
            let fields = halves[0].split(separator: " ").map { Self.unescape(String($0)) }
            guard fields.count >= 5 else { continue }
            let root = fields[3], mountPoint = fields[4]
            guard root == "/" || path == root || path.hasPrefix(root + "/") else { continue }
            let relative = root == "/" ? path : String(path.dropFirst(root.count))
            let directory = (mountPoint as NSString).appendingPathComponent(relative)
            if usable(directory) { return directory }
        }
        return nil
    }

    /// Whether a leaf can be made, entered and killed under `directory`; removes leaves that crashed
    /// supervisors of this host left behind (`rmdir` removes only empty ones).
    private static func usable(_ directory: String) -> Bool {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasPrefix("understudy.") {
            let pid = name.split(separator: ".").dropFirst().first.flatMap { pid_t($0) } ?? 0
            if pid > 0, kill(pid, 0) != 0, errno == ESRCH { rmdir((directory as NSString).appendingPathComponent(name)) }
        }
        // Moving a process into a leaf takes write access to the cgroup it leaves, this one, as well.
        guard access(directory + "/cgroup.procs", W_OK) == 0 else { return false }
        let probe = (directory as NSString).appendingPathComponent("understudy.\(getpid()).probe")
        guard mkdir(probe, 0o755) == 0 || errno == EEXIST else { return false }
        defer { rmdir(probe) }
        return access(probe + "/cgroup.kill", W_OK) == 0 && access(probe + "/cgroup.procs", W_OK) == 0
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    private static func unescape(_ field: String) -> String {
        field.replacingOccurrences(of: "\\040", with: " ").replacingOccurrences(of: "\\011", with: "\t")
            .replacingOccurrences(of: "\\012", with: "\n").replacingOccurrences(of: "\\134", with: "\\")
    }

    private static let leaves = Atomic<Int>(0)

    /// A new, empty leaf for one command; `nil` in process-group mode.
    ///
    /// - Throws: ``SupervisorError`` when the leaf cannot be made.
    func makeLeaf() throws(SupervisorError) -> String? {
        guard case .cgroup(let parent) = self else { return nil }
        let number = Self.leaves.add(1, ordering: .relaxed).newValue
        let leaf = (parent as NSString).appendingPathComponent("understudy.\(getpid()).\(number)")
        guard mkdir(leaf, 0o755) == 0 else {
            throw SupervisorError(.commandNotExecutable, "cannot make the cgroup \(leaf): \(String(cString: strerror(errno)))")
        }
        return leaf
    }
}
