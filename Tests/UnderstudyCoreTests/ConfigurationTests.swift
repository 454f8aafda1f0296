import Testing
import UnderstudyCore

@Suite("Configuration")
struct ConfigurationTests {
    // MARK: Names

    @Test(arguments: ["orders", "a", "Orders-2024_v1.blue", String(repeating: "x", count: 128)])
    func groupName_valid_isAccepted(_ name: String) throws {
        #expect(try GroupName(name).rawValue == name)
    }

    @Test(arguments: ["", String(repeating: "x", count: 129), "has space", "slash/name", "colon:name", "at@name", "ümlaut", "tab\t"])
    func groupName_invalid_isRejected(_ name: String) {
        #expect(throws: ConfigurationError.invalidGroupName(name)) { try GroupName(name) }
    }

    @Test(arguments: ["node-1", "node_1.eu", "worker:8080", "job@host-a", String(repeating: "m", count: 128)])
    func memberID_valid_isAccepted(_ id: String) throws {
        #expect(try MemberID(id).rawValue == id)
    }

    @Test(arguments: ["", String(repeating: "m", count: 129), "two words", "a/b", "a#b", "é"])
    func memberID_invalid_isRejected(_ id: String) {
        #expect(throws: ConfigurationError.invalidMemberID(id)) { try MemberID(id) }
    }

    @Test func invalidName_message_saysHowToFix() {
        #expect(ConfigurationError.invalidGroupName("a b").description.contains("1 to 128 characters of A-Z a-z 0-9 . _ -"))
        #expect(ConfigurationError.invalidMemberID("a b").description.contains(": @"))
    }

    // MARK: Intervals

    @Test func configuration_defaults_areOneActiveWithPreemption() throws {
        let configuration = try GroupConfiguration(name: Fixture.groupName)
        #expect(configuration.activeGoal == 1)
        #expect(configuration.heartbeatInterval == .seconds(1))
        #expect(configuration.activationInterval == .seconds(3))
        #expect(configuration.preparationInterval == nil)
        #expect(configuration.preemption)
    }

    @Test func activation_justAboveTwiceHeartbeat_isAccepted() throws {
        let configuration = try Fixture.configuration(heartbeat: .seconds(1), activation: .seconds(2) + .nanoseconds(1))
        #expect(configuration.activationInterval == .nanoseconds(2_000_000_001))
    }

    @Test(arguments: [Duration.seconds(2), .seconds(1), .milliseconds(1_999)])
    func activation_atMostTwiceHeartbeat_isRejected(_ activation: Duration) {
        #expect(throws: ConfigurationError.activationNotAboveTwiceHeartbeat(heartbeat: .seconds(1), activation: activation)) {
            try Fixture.configuration(heartbeat: .seconds(1), activation: activation)
        }
    }

    @Test(arguments: [Duration.zero, .seconds(-1), .nanoseconds(-1)])
    func heartbeat_nonPositive_isRejected(_ heartbeat: Duration) {
        #expect(throws: ConfigurationError.nonPositiveInterval(name: "heartbeat", heartbeat)) {
            try Fixture.configuration(heartbeat: heartbeat)
        }
    }

    @Test(arguments: [Duration.zero, .seconds(-3)])
    func activation_nonPositive_isRejected(_ activation: Duration) {
        #expect(throws: ConfigurationError.nonPositiveInterval(name: "activation", activation)) {
            try Fixture.configuration(activation: activation)
        }
    }

    @Test(arguments: [Duration.seconds(3), .seconds(4), .zero, .seconds(-1)])
    func preparation_notBetweenZeroAndActivation_isRejected(_ preparation: Duration) {
        #expect(throws: ConfigurationError.preparationOutOfRange(preparation: preparation, activation: .seconds(3))) {
            try Fixture.configuration(activation: .seconds(3), preparation: preparation)
        }
    }

    @Test(arguments: [Duration.nanoseconds(1), .milliseconds(1_500), .seconds(3) - .nanoseconds(1)])
    func preparation_belowActivation_isAccepted(_ preparation: Duration) throws {
        #expect(try Fixture.configuration(activation: .seconds(3), preparation: preparation).preparationInterval == preparation)
    }

    @Test func intervalMessages_nameTheValues() {
        let message = ConfigurationError.activationNotAboveTwiceHeartbeat(heartbeat: .seconds(1), activation: .seconds(2)).description
        #expect(message == "activation interval 2s must be greater than twice the heartbeat interval 1s: "
            + "raise the activation interval or lower the heartbeat interval")
        #expect(ConfigurationError.nonPositiveInterval(name: "heartbeat", .milliseconds(-150)).description
            == "invalid heartbeat interval -150ms: it must be greater than zero")
        #expect(ConfigurationError.preparationOutOfRange(preparation: .milliseconds(2_500), activation: .seconds(2)).description
            == "preparation interval 2.5s must be greater than zero and less than the activation interval 2s")
    }

    // MARK: Ranges

    @Test(arguments: [1, 2, GroupConfiguration.maximumActiveGoal])
    func activeGoal_inRange_isAccepted(_ goal: Int) throws {
        #expect(try Fixture.configuration(activeGoal: goal).activeGoal == goal)
    }

    @Test(arguments: [0, -1, GroupConfiguration.maximumActiveGoal + 1])
    func activeGoal_outOfRange_isRejected(_ goal: Int) {
        #expect(throws: ConfigurationError.activeGoalOutOfRange(goal)) { try Fixture.configuration(activeGoal: goal) }
    }

    @Test(arguments: [0, 50, MemberInfo.maximumWeight])
    func weight_inRange_isAccepted(_ weight: Int) throws {
        #expect(try Fixture.member("a", weight: weight).weight == weight)
    }

    @Test(arguments: [-1, MemberInfo.maximumWeight + 1])
    func weight_outOfRange_isRejected(_ weight: Int) {
        #expect(throws: ConfigurationError.weightOutOfRange(weight)) { try Fixture.member("a", weight: weight) }
    }

    @Test func memberInfo_defaultWeight_is50() throws {
        #expect(try MemberInfo(id: MemberID("a"), incarnation: "i", host: "h", pid: 1).weight == 50)
    }

    // MARK: Small values

    @Test func fencingTokens_orderByValue() {
        #expect(token(2) > token(1))
        #expect(token(10) > token(9))
        #expect(token(7).description == "7")
    }

    @Test func instant_arithmetic_isExact() {
        let start = Instant(nanoseconds: 1_000)
        #expect(start + .seconds(1) == Instant(nanoseconds: 1_000_001_000))
        #expect(start - .nanoseconds(1_000) == .zero)
        #expect((start + .milliseconds(5)) - start == .milliseconds(5))
        #expect(start < start + .nanoseconds(1))
    }

    @Test(arguments: [
        (Duration.zero, "0s"), (.nanoseconds(999), "999ns"), (.microseconds(750), "750µs"), (.milliseconds(150), "150ms"),
        (.milliseconds(2_500), "2.5s"), (.seconds(3), "3s"), (.milliseconds(-150), "-150ms"),
    ])
    func duration_formatted_isCompact(_ duration: Duration, _ expected: String) {
        #expect(duration.formatted == expected)
    }

    @Test func duration_nanoseconds_saturates() {
        #expect(Duration.seconds(Int64.max).nanoseconds == .max)
        #expect(Duration.seconds(Int64.min).nanoseconds == .min)
        #expect(Duration.milliseconds(-1).nanoseconds == -1_000_000)
    }
}
