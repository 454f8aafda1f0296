import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: The server's floor: pgbench

/// The plainest queue PostgreSQL can run: one table, and per pgbench transaction one job inserted and one job
/// claimed and deleted with `FOR UPDATE SKIP LOCKED` (each its own transaction, one row at a time, prepared
/// statements). The table is prefilled so that a claim always finds a row. One script run = one job.
enum PgbenchFloor {
    static let script = """
        INSERT INTO bench_floor_jobs (payload) VALUES ('{}');
        DELETE FROM bench_floor_jobs WHERE id = (SELECT id FROM bench_floor_jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);

        """

    static func run(url: String, clients: Int, warmup: Duration, duration: Duration, directory: String) throws -> RateResult {
        let pgbench = try pgbenchPath()
        try psql(url, """
            DROP TABLE IF EXISTS bench_floor_jobs;
            CREATE TABLE bench_floor_jobs (id bigserial PRIMARY KEY, payload text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO bench_floor_jobs (payload) SELECT '{}' FROM generate_series(1, 10000);
            """)
        try psql(url, "VACUUM ANALYZE bench_floor_jobs")
        let file = "\(directory)/floor.sql"
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        let warm = Int((warmup.milliseconds / 1000).rounded())
        let seconds = Int((duration.milliseconds / 1000).rounded())
        note("pgbench floor: \(clients) clients, \(warm + seconds) s")
        let output = try runCommand([
            pgbench, "-n", "-M", "prepared", "-f", file, "-c", "\(clients)", "-j", "\(min(clients, 2))",
            "-T", "\(warm + seconds)", "-P", "1", url,
        ]).output
        // progress: 12.0 s, 3456.7 tps, lat 0.289 ms stddev 0.101, 0 failed
        var rates: [(at: Double, tps: Double)] = []
        for line in output.split(separator: "\n") where line.hasPrefix("progress:") {
            let fields = line.split(separator: " ")
            guard fields.count > 4, let at = Double(fields[1]), let tps = Double(fields[3]) else { continue }
            rates.append((at, tps))
        }
        let window = rates.filter { $0.at > Double(warm) }.map(\.tps)
        guard !window.isEmpty else { throw BenchError("pgbench printed no progress:\n\(output.suffix(2000))") }
        let left = try psql(url, "SELECT count(*) FROM bench_floor_jobs")
        let jobs = Int(window.reduce(0, +).rounded())
        return RateResult(
            system: "pgbench floor", store: "PostgreSQL", handlers: clients, perSecond: window, jobs: jobs, seconds: Double(window.count),
            note: "\(clients) clients, -M prepared; rows left at the end: \(left)"
        )
    }
}

// MARK: A Python peer: PgQueuer

/// PgQueuer (PyPI `pgqueuer`, asyncpg), installed into a virtual environment in a temporary directory: one Python
/// process with a producer and one QueueManager whose entrypoint runs at most `handlers` no-op jobs at once.
enum PythonPeer {
    static let script = #"""
        import asyncio, json, sys, time
        from datetime import timedelta

        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        async def main(dsn, handlers, warmup, duration):
            setup = await asyncpg.connect(dsn)
            queries = Queries(AsyncpgDriver(setup))
            if not await queries.schema_is_installed():
                await queries.install()
            await queries.clear_queue()
            done = 0
            consumer = await asyncpg.connect(dsn)
            qm = QueueManager(Queries(AsyncpgDriver(consumer)))

            @qm.entrypoint("noop", concurrency_limit=handlers)
            async def noop(job):
                nonlocal done
                done += 1

            stop = False
            producer_conn = await asyncpg.connect(dsn)
            producer = Queries(AsyncpgDriver(producer_conn))
            enqueued = 0

            async def produce():
                nonlocal enqueued
                batch = 200
                while not stop:
                    if enqueued - done < 1000:
                        await producer.enqueue(["noop"] * batch, [b"{}"] * batch, [0] * batch)
                        enqueued += batch
                    else:
                        await asyncio.sleep(0.002)

            producing = asyncio.create_task(produce())
            running = asyncio.create_task(qm.run(batch_size=max(1, handlers), dequeue_timeout=timedelta(seconds=1)))
            await asyncio.sleep(warmup)
            rates = []
            start = last_at = time.monotonic()
            first = last = done
            for second in range(1, duration + 1):
                await asyncio.sleep(max(0, start + second - time.monotonic()))
                now, value = time.monotonic(), done
                rates.append((value - last) / (now - last_at))
                last, last_at = value, now
            stop = True
            await producing
            qm.shutdown.set()
            try:
                await asyncio.wait_for(running, 30)
            except Exception:
                pass
            print("RESULT " + json.dumps({"rates": rates, "jobs": last - first, "seconds": last_at - start}))

        asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])))
        """#

    /// Creates the virtual environment and installs PgQueuer; the interpreter and PgQueuer's version.
    static func install(in directory: String) throws -> (python: String, version: String) {
        guard let python3 = onPath("python3") else { throw BenchError("python3 is not on PATH") }
        let venv = "\(directory)/venv"
        note("installing PgQueuer from PyPI into \(venv)")
        try runCommand([python3, "-m", "venv", venv])
        try runCommand(["\(venv)/bin/pip", "install", "--quiet", "--disable-pip-version-check", "pgqueuer[asyncpg]"])
        let version = try runCommand(["\(venv)/bin/python", "-c", "import pgqueuer; print(pgqueuer.__version__)"]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try script.write(toFile: "\(directory)/peer.py", atomically: true, encoding: .utf8)
        return ("\(venv)/bin/python", version)
    }

    static func run(python: String, version: String, directory: String, url: String, handlers: Int, warmup: Duration, duration: Duration) throws -> RateResult {
        note("PgQueuer \(version): \(handlers) handlers")
        let output = try runCommand([
            python, "\(directory)/peer.py", url, "\(handlers)", String(warmup.milliseconds / 1000),
            "\(Int((duration.milliseconds / 1000).rounded()))",
        ]).output
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("RESULT ") }) else {
            throw BenchError("the PgQueuer peer printed no result:\n\(output.suffix(3000))")
        }
        struct Reply: Decodable { var rates: [Double]; var jobs: Int; var seconds: Double }
        let reply = try JSONDecoder().decode(Reply.self, from: Data(line.dropFirst("RESULT ".count).utf8))
        return RateResult(
            system: "PgQueuer \(version)", store: "PostgreSQL", handlers: handlers, perSecond: reply.rates, jobs: reply.jobs,
            seconds: reply.seconds, note: "asyncpg; entrypoint concurrency_limit=\(handlers), batch_size=\(handlers); counted when the handler returns"
        )
    }
}

// MARK: Another session idle in transaction

/// A `psql` session that runs `BEGIN ISOLATION LEVEL …; SELECT count(*) FROM understudy.jobs;` and then waits for
/// more input, so the server shows it `idle in transaction` until it is killed.
struct IdleTransaction {
    let pid: pid_t

    static func start(url: String, isolation: String, log: String) throws -> IdleTransaction {
        let psql = try postgresBin() + "/psql"
        let sql = "BEGIN ISOLATION LEVEL \(isolation.uppercased()); SELECT count(*) FROM understudy.jobs;"
        let pid = try spawn(
            ["/bin/sh", "-c", "(printf '%s\\n' \"$1\"; exec sleep 100000) | exec \"$2\" -X \"$3\"", "sh", sql, psql, url],
            log: log, environment: ["PGAPPNAME": "bench-idle-tx"]
        )
        let holder = IdleTransaction(pid: pid)
        for _ in 0..<100 {
            if let state = try? Self.state(url: url), state.hasPrefix("idle in transaction") { return holder }
            sleep(milliseconds: 50)
        }
        holder.stop()
        throw BenchError("the idle session did not become idle in transaction; see \(log)")
    }

    /// `state|backend_xmin` of the session, as pg_stat_activity shows it.
    static func state(url: String) throws -> String {
        try psql(url, "SELECT state || '|' || coalesce(backend_xmin::text, 'no snapshot') FROM pg_stat_activity WHERE application_name = 'bench-idle-tx'")
    }

    func stop() {
        kill(-pid, SIGKILL)
        reap(pid)
    }
}
