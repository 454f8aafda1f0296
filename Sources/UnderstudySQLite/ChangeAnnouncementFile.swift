import Dispatch
import Glibc
import Logging
import Synchronization
import UnderstudyCore
import UnderstudyStore

/// Announcements of releases and joins between the processes that share a SQLite store, SQLite's `NOTIFY`: the
/// store that applied one appends the group's name to a small file beside the database, and every store that watches
/// the file (with inotify) announces it to the group's subscribers. Only a hint; polling stays the safety net.
///
/// Work queues announce enqueued (and given back) jobs through the same file, as lines `queue:` and the queue's
/// name; `:` is in no group name, so a reader that knows only groups skips them.
package final class ChangeAnnouncementFile: Sendable {
    /// Once the file is larger than this, the next announcement empties it first.
    package static let maximumSize = 64 * 1024

    package let path: String
    package let subscribers = ChangeSubscribers<GroupName>()
    /// The subscribers to announcements of work queues.
    package let queueSubscribers = ChangeSubscribers<QueueName>()
    /// What starts a line that announces a queue.
    static let queuePrefix = "queue:"
    private let logger = Logger(label: "understudy.sqlite")

    private struct Watch {
        var source: DispatchSourceRead
        /// How much of the file this watcher has read.
        var offset: Int
    }

    private let watch = Mutex<Watch?>(nil)
    /// Set once watching could not start, so it is not tried again for every subscriber.
    private let unavailable = Atomic<Bool>(false)

    package init(path: String) {
        self.path = path
    }

    deinit {
        watch.withLock { $0?.source.cancel() }
    }

    /// Appends one line per group; each line is one `write` of fewer than `PIPE_BUF` bytes in append mode, so
    /// lines of concurrent writers do not interleave.
    package func announce(_ groups: [GroupName]) {
        append(groups.map(\.rawValue))
    }

    /// Appends one line per queue, once for each queue however often it is named.
    package func announce(queues: some Sequence<QueueName>) {
        var seen: Set<QueueName> = []
        append(queues.filter { seen.insert($0).inserted }.map { Self.queuePrefix + $0.rawValue })
    }

    private func append(_ lines: [String]) {
        guard !lines.isEmpty else { return }
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            logger.debug("cannot announce a change", metadata: ["file": "\(path)", "errno": "\(errno)"])
            return
        }
        defer { close(descriptor) }
        var status = stat()
        if fstat(descriptor, &status) == 0, Int(status.st_size) > Self.maximumSize {
            _ = ftruncate(descriptor, 0)
        }
        for text in lines {
            var line = Array((text + "\n").utf8)
            _ = line.withUnsafeMutableBytes { write(descriptor, $0.baseAddress, $0.count) }
        }
    }

    /// Starts watching the file, once; announcements written before are not replayed.
    package func startWatching() {
        guard !unavailable.load(ordering: .relaxed) else { return }
        watch.withLock { watch in
            guard watch == nil else { return }
            let file = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            if file >= 0 { close(file) }
            let notifications = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
            guard notifications >= 0, inotify_add_watch(notifications, path, UInt32(IN_MODIFY)) >= 0 else {
                logger.info("cannot watch for announced changes; members learn of them at their next heartbeat", metadata: ["file": "\(path)", "errno": "\(errno)"])
                if notifications >= 0 { close(notifications) }
                unavailable.store(true, ordering: .relaxed)
                return
            }
            let source = DispatchSource.makeReadSource(fileDescriptor: notifications, queue: DispatchQueue(label: "understudy.changes"))
            source.setEventHandler { [weak self] in
                Self.drain(notifications)
                self?.readAnnouncements()
            }
            source.setCancelHandler { close(notifications) }
            watch = Watch(source: source, offset: Self.size(of: path))
            source.resume()
        }
    }

    /// Stops watching and ends every subscriber's stream.
    package func stop() {
        watch.withLock { watch in
            watch?.source.cancel()
            watch = nil
        }
        subscribers.finishAll()
        queueSubscribers.finishAll()
    }

    private func readAnnouncements() {
        let lines: [String] = watch.withLock { watch in
            guard var current = watch else { return [] }
            defer { watch = current }
            let size = Self.size(of: path)
            if size < current.offset { current.offset = 0 }  // emptied by a writer
            guard size > current.offset, let file = fopen(path, "r") else { return [] }
            defer { fclose(file) }
            fseek(file, current.offset, SEEK_SET)
            var bytes = [UInt8](repeating: 0, count: size - current.offset)
            let count = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            // Only whole lines; a line still being written is read next time.
            guard let end = bytes[..<count].lastIndex(of: UInt8(ascii: "\n")) else { return [] }
            current.offset += end + 1
            return bytes[..<end].split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
        }
        var groups: Set<GroupName> = []
        var queues: Set<QueueName> = []
        for line in lines {
            if line.hasPrefix(Self.queuePrefix) {
                if let queue = try? QueueName(String(line.dropFirst(Self.queuePrefix.count))) { queues.insert(queue) }
            } else if let group = try? GroupName(line) {
                groups.insert(group)
            }
        }
        for group in groups { subscribers.announce(group) }
        for queue in queues { queueSubscribers.announce(queue) }
    }

    private static func drain(_ notifications: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while buffer.withUnsafeMutableBytes({ read(notifications, $0.baseAddress, $0.count) }) > 0 {}
    }

    private static func size(of path: String) -> Int {
        var status = stat()
        return stat(path, &status) == 0 ? Int(status.st_size) : 0
    }
}
