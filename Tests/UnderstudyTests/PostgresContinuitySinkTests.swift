import Foundation
import Testing
import UnderstudyCore
import UnderstudyPostgres
import UnderstudyStore

/// The reference sink against the real PostgreSQL server that `scripts/test` starts.
@Suite("PostgreSQL continuity sink", .serialized, .timeLimit(.minutes(2)))
struct PostgresContinuitySinkTests {
    static func messages(_ sequences: ClosedRange<Int64>) -> [ContinuityRecord] {
        sequences.map { .message(sequence: $0, payload: Array("m\($0)".utf8)) }
    }

    static func epoch(_ value: UInt64) -> FencingToken { FencingToken(rawValue: value) }

    @Test func sink_acceptsOnlyTheNextSequence_skipsDuplicates_andRefusesAGap() async throws {
        let sink = try await PostgresContinuitySink(url: TestPostgres.freshSchemaURL(), stream: "feed")
        defer { sink.close() }
        #expect(try await sink.append(Self.messages(1...3), epoch: Self.epoch(5)) == .accepted(position: 3, duplicates: 0))
        // A batch that starts after a hole is refused whole.
        #expect(try await sink.append(Self.messages(5...6), epoch: Self.epoch(5)) == .outOfSequence(position: 3))
        // Duplicates at the head are skipped, the rest appended.
        #expect(try await sink.append(Self.messages(2...5), epoch: Self.epoch(5)) == .accepted(position: 5, duplicates: 2))
        // A duplicate alone is skipped and changes nothing.
        #expect(try await sink.append(Self.messages(4...4), epoch: Self.epoch(5)) == .accepted(position: 5, duplicates: 1))
        // A gap record continues the stream.
        #expect(try await sink.append([.gap(first: 6, count: 2)] + Self.messages(8...8), epoch: Self.epoch(5)) == .accepted(position: 8, duplicates: 0))
        #expect(try await sink.position() == ContinuityStream(epoch: Self.epoch(5), position: 8))
    }

    @Test func sink_refusesAnOlderEpoch_onceANewerOneWrote() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let sink = try await PostgresContinuitySink(url: url, stream: "feed")
        defer { sink.close() }
        _ = try await sink.append(Self.messages(1...2), epoch: Self.epoch(5))
        #expect(try await sink.append(Self.messages(3...3), epoch: Self.epoch(9)) == .accepted(position: 3, duplicates: 0))
        #expect(try await sink.append(Self.messages(4...4), epoch: Self.epoch(5)) == .staleEpoch(current: Self.epoch(9)))
        // Another stream of the same table is independent.
        let other = try await PostgresContinuitySink(url: url, stream: "other")
        defer { other.close() }
        #expect(try await other.append(Self.messages(1...1), epoch: Self.epoch(1)) == .accepted(position: 1, duplicates: 0))
        #expect(try await sink.position() == ContinuityStream(epoch: Self.epoch(9), position: 3))
    }

    @Test func racingWriters_oneStream_eachSequenceOnceAndInOrder() async throws {
        let url = try TestPostgres.freshSchemaURL()
        let sink = try await PostgresContinuitySink(url: url, stream: "feed")
        defer { sink.close() }
        // Four writers with one epoch each push the same 1…200 in batches of 10, concurrently.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 1...4 {
                group.addTask {
                    var next: Int64 = 1
                    while next <= 200 {
                        switch try await sink.append(Self.messages(next...next + 9), epoch: Self.epoch(UInt64(writer))) {
                        case .accepted(let position, _), .outOfSequence(let position): next = position + 1
                        case .staleEpoch: return
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let stream = try await sink.position()
        #expect(stream.position <= 200 && stream.epoch.rawValue >= 1)
        let firsts = try await sink.records(after: 0).map(\.record.first)
        #expect(firsts == Array(1...stream.position))
    }

    /// The SQL against ``ContinuitySinkRule``, on random batches.
    @Test func sink_agreesWithTheRule_onRandomBatches() async throws {
        let sink = try await PostgresContinuitySink(url: TestPostgres.freshSchemaURL(), stream: "feed")
        defer { sink.close() }
        var model = ContinuityStream()
        var random = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let first = max(1, model.position + Int64.random(in: -3...2, using: &random))
            let count = Int64.random(in: 0...4, using: &random)
            var records: [ContinuityRecord] = []
            var next = first
            for _ in 0..<count {
                if Bool.random(using: &random) {
                    records.append(.message(sequence: next, payload: [1]))
                    next += 1
                } else {
                    let span = Int64.random(in: 1...3, using: &random)
                    records.append(.gap(first: next, count: span))
                    next += span
                }
            }
            let epoch = Self.epoch(UInt64(max(1, Int64(model.epoch.rawValue) + Int64.random(in: -1...1, using: &random))))
            let expected = ContinuitySinkRule.append(records, epoch: epoch, to: model)
            let answer = try await sink.append(records, epoch: epoch)
            #expect(answer == expected.answer, "\(records) under \(epoch) over \(model)")
            model = expected.stream
        }
        #expect(try await sink.position() == model)
    }
}
