import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on loopback whose traffic can be stalled and resumed: while stalled it accepts and reads nothing,
/// like a network path that silently drops packets; no connection is closed or reset, so a client sees only silence.
/// ``wedgeOpenConnections()`` silences the connections open so far for good, as a server host that died would.
final class StallingProxy: Sendable {
    let port: Int
    private let listener: Int32
    private let targetPort: Int
    private let stalled = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    private let accepted = Atomic<Int>(0)
    private let wedgedBelow = Atomic<Int>(0)

    init(targetPort: Int) throws {
        self.targetPort = targetPort
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = Self.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 && listen(descriptor, 16) == 0 && getsockname(descriptor, pointer, &length) == 0
            }
        }
        guard descriptor >= 0, bound else { throw POSIXError(.EADDRNOTAVAIL) }
        listener = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { close() }

    func stall() { stalled.store(true, ordering: .sequentiallyConsistent) }
    func resume() { stalled.store(false, ordering: .sequentiallyConsistent) }
    func wedgeOpenConnections() { wedgedBelow.store(accepted.load(ordering: .sequentiallyConsistent), ordering: .sequentiallyConsistent) }

    func close() {
        guard !closed.exchange(true, ordering: .sequentiallyConsistent) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        Glibc.close(listener)
    }

    private func acceptLoop() {
        while !closed.load(ordering: .sequentiallyConsistent) {
            guard waitUntilFlowing(listener, connection: nil) else { return }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            let connection = accepted.add(1, ordering: .sequentiallyConsistent).oldValue
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: targetPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            guard connected else {
                Glibc.close(client)
                Glibc.close(server)
                continue
            }
            Thread.detachNewThread { [self] in pump(from: client, to: server, connection: connection) }
            Thread.detachNewThread { [self] in pump(from: server, to: client, connection: connection) }
        }
    }

    /// Copies bytes until either side closes; reads nothing while stalled. It shuts both sockets down but closes
    /// neither: the pump of the other direction may still hold them, and a test process can spare the descriptors.
    private func pump(from source: Int32, to destination: Int32, connection: Int) {
        var buffer = [UInt8](repeating: 0, count: 16_384)
        defer {
            shutdown(source, Int32(SHUT_RDWR))
            shutdown(destination, Int32(SHUT_RDWR))
        }
        while waitUntilFlowing(source, connection: connection) {
            let count = read(source, &buffer, buffer.count)
            guard count > 0 else { return }
            var written = 0
            while written < count {
                let result = buffer[written..<count].withUnsafeBytes { write(destination, $0.baseAddress, $0.count) }
                guard result > 0 else { return }
                written += result
            }
        }
    }

    /// Waits until `descriptor` is readable and its traffic may flow; false once the proxy is closed.
    private func waitUntilFlowing(_ descriptor: Int32, connection: Int?) -> Bool {
        func silenced() -> Bool {
            stalled.load(ordering: .sequentiallyConsistent)
                || connection.map { $0 < wedgedBelow.load(ordering: .sequentiallyConsistent) } ?? false
        }
        while !closed.load(ordering: .sequentiallyConsistent) {
            if !silenced() {
                var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                // Checked again after the wait: bytes that arrive once the silence has begun stay unread.
                if poll(&poller, 1, 20) > 0, !silenced() { return true }
            } else {
                usleep(20_000)
            }
        }
        return false
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }
}
