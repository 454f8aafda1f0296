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
    /// Agent-wide keys whose values differ (`http`, `http-token`, `control`): they take effect when the agent
    /// restarts.
    public var agentChanges: [String]

    public init(from old: AgentConfiguration, to new: AgentConfiguration) {
        let oldKeys = Set(old.members.map(\.key))
        let newKeys = Set(new.members.map(\.key))
        added = newKeys.subtracting(oldKeys).sorted()
        removed = oldKeys.subtracting(newKeys).sorted()
        changed = [:]
        unchanged = []
        for key in oldKeys.intersection(newKeys).sorted() {
            guard let before = old.member(key), let after = new.member(key) else { continue }
            let differences = Self.differences(before, after)
            if differences.isEmpty { unchanged.append(key) } else { changed[key] = differences }
        }
        agentChanges = []
        if old.http != new.http { agentChanges.append("http") }
        if old.httpToken != new.httpToken { agentChanges.append("http-token") }
        if old.control != new.control { agentChanges.append("control") }
    }

    /// Whether the reload would change nothing at all.
    public var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && agentChanges.isEmpty }

    /// The members to stop, removed and changed, in key order.
    public var stopping: [MemberKey] { (removed + changed.keys).sorted() }
    /// The members to start, added and changed, in key order.
    public var starting: [MemberKey] { (added + changed.keys).sorted() }

    /// One line per member: `+ added`, `- removed`, `~ changed (keys)`, `= unchanged`; then agent-wide changes.
    public var description: String {
        var lines = added.map { "+ \($0)" } + removed.map { "- \($0)" }
        lines += changed.keys.sorted().map { "~ \($0) (\(changed[$0, default: []].joined(separator: ", ")))" }
        lines += unchanged.map { "= \($0)" }
        lines += agentChanges.map { "~ agent \($0) (takes effect when the agent restarts)" }
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
            differs("weight", \.weight), differs("active-goal", \.group.activeGoal),
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
