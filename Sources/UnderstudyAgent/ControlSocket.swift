import Foundation
import Hummingbird
import Logging
import NIOCore
import UnderstudySupervisor

/// The agent's control socket: HTTP over a Unix domain socket of mode 0600, so only its owner (and root) can
/// reach it.
///
/// - `GET /status`: ``AgentStatusDocument``;
/// - `GET /plan`: what a reload would change (``AgentPlan``), or 422 with every problem of the file;
/// - `POST /reload`: reloads, answering what changed, or 422 and nothing changed;
/// - `POST /drain/GROUP`, `POST /resume/GROUP`: 404 when the agent runs no member of GROUP.
public enum ControlSocket {
    /// Serves `agent` at `path`. The socket is bound in a private directory beside `path` and renamed into
    /// place, so it never exists with a wider mode than 0600. A socket left by a dead agent is replaced.
    ///
    /// - Throws: ``AgentError`` when another agent listens at `path` or the socket cannot be made.
    public static func start(agent: Agent, at path: String, logger: Logger) async throws(AgentError) -> HTTPEndpoint {
        if FileManager.default.fileExists(atPath: path) {
            if (try? ControlClient.request("GET", "/status", socket: path)) != nil {
                throw AgentError(.unavailable, "control socket \(path): another agent listens on it")
            }
            unlink(path)
        }
        let directory = (path as NSString).deletingLastPathComponent
        var template = Array(((directory.isEmpty ? "." : directory) + "/.understudy-agent-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw AgentError(.unavailable, "control socket \(path): cannot create a directory beside it: \(String(cString: strerror(errno))) (set `control` in the file)")
        }
        let privateDirectory = String(cString: made)
        defer { rmdir(privateDirectory) }
        let bound = privateDirectory + "/s"
        let endpoint: HTTPEndpoint
        do throws(SupervisorError) {
            endpoint = try await HTTPEndpoint.start(unixSocket: bound, router: router(agent: agent), logger: logger)
        } catch {
            throw AgentError(.unavailable, "control socket \(path): \(error.message)")
        }
        guard chmod(bound, 0o600) == 0, rename(bound, path) == 0 else {
            let reason = String(cString: strerror(errno))
            await endpoint.stop()
            unlink(bound)
            throw AgentError(.unavailable, "control socket \(path): \(reason)")
        }
        return endpoint
    }

    static func router(agent: Agent) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("status") { _, _ -> Response in
            reply(.ok, await agent.status().encoded(pretty: true))
        }
        router.get("plan") { _, _ -> Response in
            await answer { () throws(AgentError) in try await agent.plan().description }
        }
        router.post("reload") { _, _ -> Response in
            await answer { () throws(AgentError) in try await agent.reload().description }
        }
        router.post("drain/:group") { _, context -> Response in
            let group = context.parameters.get("group") ?? ""
            return await answer { () throws(AgentError) in
                try await agent.drain(group: group)
                return "drained \(group)"
            }
        }
        router.post("resume/:group") { _, context -> Response in
            let group = context.parameters.get("group") ?? ""
            return await answer { () throws(AgentError) in
                try await agent.resume(group: group)
                return "resumed \(group)"
            }
        }
        return router
    }

    /// The reply to a request: its text, or the error's message with the status that stands for its kind.
    static func answer(_ body: () async throws(AgentError) -> String) async -> Response {
        do {
            return reply(.ok, try await body())
        } catch {
            return reply(status(of: error.kind), error.message)
        }
    }

    static func status(of kind: AgentError.Kind) -> HTTPResponse.Status {
        switch kind {
        case .invalidConfiguration: .unprocessableContent
        case .unknownGroup: .notFound
        case .storeUnavailable, .unavailable: .serviceUnavailable
        case .badRequest: .badRequest
        }
    }

    static func reply(_ status: HTTPResponse.Status, _ body: String, type: String = "text/plain; charset=utf-8") -> Response {
        Response(status: status, headers: [.contentType: type], body: ResponseBody(byteBuffer: ByteBuffer(string: body + "\n")))
    }
}

/// A client of the control socket: one HTTP/1.0 request per connection, answered and closed.
public enum ControlClient {
    /// Sends `method path` to the agent at `socket`; returns the status code and body.
    ///
    /// - Throws: ``AgentError`` with ``AgentError/Kind/unavailable`` when no agent answers at `socket`.
    public static func request(_ method: String, _ path: String, socket: String) throws(AgentError) -> (status: Int, body: String) {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentError(.unavailable, "cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socket.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw AgentError(.unavailable, "control socket path too long (\(bytes.count) bytes): \(socket)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw AgentError(.unavailable, "no agent answers at \(socket): \(String(cString: strerror(errno)))")
        }
        let request = Array("\(method) \(path) HTTP/1.0\r\nHost: agent\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let written = request[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { throw AgentError(.unavailable, "the agent at \(socket) closed the connection") }
            sent += written
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            response += buffer[..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n"),
              let statusLine = text[..<headerEnd.lowerBound].split(separator: "\r\n").first,
              let code = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
        else { throw AgentError(.unavailable, "the agent at \(socket) gave no answer") }
        return (code, String(text[headerEnd.upperBound...]))
    }
}
