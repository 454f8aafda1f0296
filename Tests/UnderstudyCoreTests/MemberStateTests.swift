import Testing
import UnderstudyCore

@Suite("MemberState")
struct MemberStateTests {
    /// One vocabulary: a member in its group is in the state named as the phase the store records for it.
    @Test func everyPhase_isTheStateOfTheSameName() {
        for phase in MemberPhase.allCases {
            #expect(MemberState(phase).rawValue == phase.rawValue)
        }
        #expect(MemberState.allCases.count == MemberPhase.allCases.count + 3)  // idle, leaving, finished
    }
}
