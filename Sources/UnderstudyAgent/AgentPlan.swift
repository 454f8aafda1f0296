import UnderstudySupervisor

/// What a reload changes: the members of the new file matched to the running ones by ``MemberKey``.
///
/// A pure function of two configurations. A member is `changed` when any of its resolved settings differs (a
/// new weight, command, store, interval…): the agent restarts exactly those, starts the added, stops the
/// removed, and leaves the unchanged running with the same command, lease and token. Formatting, comments and
/// the order of keys or members change nothing, since the configurations compare by meaning.
public struct AgentPlan: Sendable, Hashable, CustomStringConvertible {
    public var added: [MemberKey]
    public var removed: [MemberKey]
    /// Each changed member with the keys whose values differ.
    public var changed: [MemberKey: [String]]
    public var unchanged: [MemberKey]
    /// The queue workers, matched the same way (by queue and id): a changed worker restarts, giving its running
    /// jobs back.
    public var addedWorkers: [MemberKey]
    public var removedWorkers: [MemberKey]
    public var changedWorkers: [MemberKey]
    public var unchangedWorkers: [MemberKey]
    /// Agent-wide keys whose values differ (`http`, `http-token`, `control`). A reload moves the status page and
    /// takes the new token; the control socket moves only when the agent restarts (``restartOnly``).
    public var agentChanges: [String]
    /// The agent-wide keys a reload cannot apply: the clients of a running agent find it through the file's
    /// `control`, so the socket stays where the agent started.
    public static let restartOnly: Set<String> = ["control"]

    public init(from old: AgentConfiguration, to new: AgentConfiguration) {
        let members = Self.match(old.members, new.members, key: \.key, differences: Self.differences)
        (added, removed, changed, unchanged) = (members.added, members.removed, members.changed, members.unchanged)
        let workers = Self.match(old.workers, new.workers, key: \.key) { $0 == $1 ? [] : ["settings"] }
        (addedWorkers, removedWorkers, changedWorkers, unchangedWorkers) = (workers.added, workers.removed, workers.changed.keys.sorted(), workers.unchanged)
        agentChanges = []
        if old.http != new.http { agentChanges.append("http") }
        if old.httpToken != new.httpToken { agentChanges.append("http-token") }
        if old.control != new.control { agentChanges.append("control") }
    }

    /// Whether the reload would change nothing at all.
    public var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && changed.isEmpty && addedWorkers.isEmpty && removedWorkers.isEmpty
            && changedWorkers.isEmpty && agentChanges.isEmpty
    }

    /// Items of two versions matched by key: those only in the new, only in the old, in both with differences
    /// (by key), and in both alike.
    static func match<Item>(
        _ old: [Item], _ new: [Item], key: (Item) -> MemberKey, differences: (Item, Item) -> [String]
    ) -> (added: [MemberKey], removed: [MemberKey], changed: [MemberKey: [String]], unchanged: [MemberKey]) {
        let before = Dictionary(old.map { (key($0), $0) }, uniquingKeysWith: { first, _ in first })
        let after = Dictionary(new.map { (key($0), $0) }, uniquingKeysWith: { first, _ in first })
        var changed: [MemberKey: [String]] = [:]
        var unchanged: [MemberKey] = []
        for (key, item) in before.sorted(by: { $0.key < $1.key }) {
            guard let next = after[key] else { continue }
            let found = differences(item, next)
            if found.isEmpty { unchanged.append(key) } else { changed[key] = found }
        }
        return (after.keys.filter { before[$0] == nil }.sorted(), before.keys.filter { after[$0] == nil }.sorted(), changed, unchanged)
    }

    /// The members to stop, removed and changed, in key order.
    public var stopping: [MemberKey] { (removed + changed.keys).sorted() }
    /// The members to start, added and changed, in key order.
    public var starting: [MemberKey] { (added + changed.keys).sorted() }

    /// One line per member: `+ added`, `- removed`, `~ changed (keys)`, `= unchanged`; then agent-wide changes.
    public var description: String {
        var lines = added.map { "+ \($0)" } + removed.map { "- \($0)" }
        lines += changed.keys.sorted().map { "~ \($0) (\(changed[$0, default: []].joined(separator: ", ")))" }
        lines += unchanged.map { "= \($0)" }
        lines += addedWorkers.map { "+ worker \($0)" } + removedWorkers.map { "- worker \($0)" }
        lines += changedWorkers.map { "~ worker \($0)" } + unchangedWorkers.map { "= worker \($0)" }
        lines += agentChanges.map { "~ agent \($0)" + (Self.restartOnly.contains($0) ? " (takes effect when the agent restarts)" : "") }
        if isEmpty { lines.append("no changes") }
        return lines.joined(separator: "\n")
    }

    /// The file's keys whose resolved values differ between two versions of one member.
    static func differences(_ old: AgentConfiguration.Member, _ new: AgentConfiguration.Member) -> [String] {
        func differs<Value: Hashable>(_ key: String, _ path: KeyPath<AgentConfiguration.Member, Value>) -> String? {
            old[keyPath: path] == new[keyPath: path] ? nil : key
        }
        let named = [
            differs("command", \.command), differs("store", \.store), differs("password-file", \.passwordFile),
            differs("weight", \.weight), differs("active-goal", \.group.activeGoal), differs("partitions", \.partitions),
            differs("heartbeat", \.group.heartbeatInterval), differs("activation", \.group.activationInterval),
            differs("preparation", \.group.preparationInterval), differs("preempt", \.group.preemption),
            differs("stop-grace", \.stopGrace), differs("restart-backoff", \.restart.backoff),
            differs("restart-backoff-max", \.restart.maximumBackoff), differs("restart-burst", \.restart.burst),
            differs("restart-window", \.restart.window), differs("environment", \.environment),
            differs("working-directory", \.workingDirectory), differs("on-activate", \.onActivate),
            differs("on-deactivate", \.onDeactivate), differs("hook-timeout", \.hookTimeout),
            differs("containment", \.containment), differs("log-format", \.logFormat),
        ].compactMap { $0 }
        // A difference no key above names still restarts the member, under a name that says so.
        return named.isEmpty && old != new ? ["settings"] : named
    }
}
