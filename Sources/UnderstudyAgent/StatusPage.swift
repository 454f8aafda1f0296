import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import UnderstudySupervisor

/// The agent's HTTP endpoint (`http` in its file):
///
/// - `GET /`: the status page, plain HTML, CSS and a little JavaScript, no external assets, kept live by
/// - `GET /events`: server-sent events, one ``AgentStatusDocument`` whenever it changes (polled every 250 ms);
/// - `GET /status`: ``AgentStatusDocument``; `GET /metrics`: every member's metrics (Prometheus text);
/// - `GET /healthz`: 200 while the agent runs;
/// - `POST /drain/GROUP`, `POST /resume/GROUP`: only with `Authorization: Bearer` and the file's `http-token`
///   (without a token in the file the endpoint is read-only: 403); each is logged. The token is the one of the
///   file as last loaded, so a reload that changes it takes effect at once.
public enum StatusPage {
    public static func router(agent: Agent, registry: PrometheusCollectorRegistry, logger: Logger) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/") { _, _ -> Response in
            let initial = await agent.status().encoded().replacingOccurrences(of: "</", with: "<\\/")
            return ControlSocket.reply(.ok, html.replacingOccurrences(of: "{{initial}}", with: initial), type: "text/html; charset=utf-8")
        }
        router.get("status") { _, _ -> Response in
            ControlSocket.reply(.ok, await agent.status().encoded(pretty: true), type: "application/json")
        }
        router.get("healthz") { _, _ -> Response in ControlSocket.reply(.ok, "ok") }
        router.get("metrics") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer()))
            )
        }
        router.get("events") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: ResponseBody { writer in
                    var last = ""
                    while !Task.isCancelled {
                        let document = await agent.status().encoded()
                        if document != last {
                            try await writer.write(ByteBuffer(string: "data: \(document)\n\n"))
                            last = document
                        }
                        try await Task.sleep(for: .milliseconds(250))
                    }
                    try await writer.finish(nil)
                }
            )
        }
        for action in ["drain", "resume"] {
            router.post("\(action)/:group") { request, context -> Response in
                let group = context.parameters.get("group") ?? ""
                guard let token = await agent.httpToken else {
                    logger.warning("refused over HTTP: the file sets no http-token", metadata: ["action": "\(action)", "group": "\(group)"])
                    return ControlSocket.reply(.forbidden, "read-only: set `http-token` in the agent's file to \(action) over HTTP")
                }
                guard request.headers[.authorization] == "Bearer \(token)" else {
                    logger.warning("refused over HTTP: wrong or missing bearer token", metadata: ["action": "\(action)", "group": "\(group)"])
                    return ControlSocket.reply(.unauthorized, "a bearer token is required")
                }
                logger.notice("over HTTP", metadata: ["action": "\(action)", "group": "\(group)"])
                return await ControlSocket.answer { () throws(AgentError) in
                    if action == "drain" { try await agent.drain(group: group) } else { try await agent.resume(group: group) }
                    return "\(action == "drain" ? "drained" : "resumed") \(group)"
                }
            }
        }
        return router
    }

    /// The page: rendered by its script from the document embedded in it, then from each event.
    static let html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>understudy agent</title>
        <style>
        :root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --off: #888; }
        body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 60rem; }
        h1 { font-size: 1.2rem; margin: 0 0 .2rem; } h2 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
        .meta { color: var(--off); font-size: .85rem; }
        .scroll { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
        th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #8884; white-space: nowrap; }
        th { font-weight: 600; font-size: .85rem; }
        .state { font-weight: 600; }
        .active { color: var(--ok); } .resting, .stopping, .preparing { color: var(--warn); } .ended { color: #c00; }
        .badge { display: inline-block; padding: 0 .4rem; border-radius: .6rem; background: #8882; font-size: .8rem; }
        #live { float: right; } #live.off { color: #c00; }
        </style>
        </head>
        <body>
        <h1>understudy agent <span id="live" class="badge">live</span></h1>
        <div class="meta" id="meta"></div>
        <div id="groups"></div>
        <h2>Members of this agent</h2>
        <div class="scroll"><table><thead><tr><th>group</th><th>id</th><th>weight</th><th>state</th><th>token (partition:token)</th><th>note</th></tr></thead><tbody id="members"></tbody></table></div>
        <section id="workers-section" hidden>
        <h2>Queue workers</h2>
        <div class="scroll"><table><thead><tr><th>queue</th><th>id</th><th>state</th><th>concurrency</th><th>pending</th><th>running</th></tr></thead><tbody id="workers"></tbody></table></div>
        </section>
        <h2>Failover history</h2>
        <div class="scroll"><table><thead><tr><th>when</th><th>group</th><th>active was</th><th>active now</th><th>why</th><th>below goal for</th></tr></thead><tbody id="failovers"></tbody></table></div>
        <h2>Transitions of this agent's members</h2>
        <div class="scroll"><table><thead><tr><th>when</th><th>group</th><th>member</th><th>event</th><th>reason</th><th>token</th><th>active for</th></tr></thead><tbody id="history"></tbody></table></div>
        <script id="initial" type="application/json">{{initial}}</script>
        <script>
        "use strict";
        const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text ?? "–"; if (cls) td.className = cls; return td; };
        const row = (cells) => { const tr = document.createElement("tr"); cells.forEach((c) => tr.appendChild(c)); return tr; };
        // A partitioned member's token is one per partition it owns.
        const tokens = (m) => m.partitions == null ? m.token : m.partitions.map((p) => `${p.partition}:${p.token}`).join(" ") || "none";
        const ms = (v) => v == null ? "–" : v < 1000 ? Math.round(v) + " ms" : (v / 1000).toFixed(1) + " s";
        function render(doc) {
          document.getElementById("meta").textContent = `pid ${doc.pid} · ${doc.file} · updated ${new Date().toLocaleTimeString()}`;
          const groups = document.getElementById("groups");
          groups.replaceChildren(...doc.groups.map((g) => {
            const section = document.createElement("section");
            const active = g.members.filter((m) => m.state === "active").map((m) => m.id);
            section.dataset.group = g.group;
            section.dataset.active = active.join(" ");
            const h = document.createElement("h2");
            h.textContent = `${g.group} — active: ${active.join(", ") || "none"} (${g.activeCount}/${g.activeGoal})`;
            const wrap = document.createElement("div"); wrap.className = "scroll";
            const table = document.createElement("table");
            table.innerHTML = "<thead><tr><th>rank</th><th>member</th><th>host</th><th>weight</th><th>state</th><th>token</th><th>heartbeat age</th></tr></thead>";
            const body = document.createElement("tbody");
            g.members.forEach((m) => body.appendChild(row([cell(m.rank), cell(m.id), cell(`${m.host} (${m.pid})`), cell(m.weight), cell(m.state, "state " + m.state), cell(m.token), cell(ms(m.heartbeatAgeMs))])));
            table.appendChild(body); wrap.appendChild(table);
            section.append(h, wrap);
            return section;
          }));
          document.getElementById("members").replaceChildren(...doc.members.map((m) =>
            row([cell(m.group), cell(m.id), cell(m.weight), cell(m.state, "state " + m.state), cell(tokens(m)), cell(m.ended ?? (m.drained ? "drained" : ""))])));
          document.getElementById("workers-section").hidden = doc.workers.length === 0;
          document.getElementById("workers").replaceChildren(...doc.workers.map((w) =>
            row([cell(w.queue), cell(w.id), cell(w.ended ? `ended (${w.ended})` : w.state, "state " + w.state), cell(w.concurrency), cell(w.pending), cell(w.running)])));
          document.getElementById("failovers").replaceChildren(...doc.failovers.map((f) =>
            row([cell(new Date(f.at).toLocaleTimeString()), cell(f.group), cell(f.from.join(", ") || "none"), cell(f.to.join(", ") || "none"), cell(f.reason), cell(ms(f.belowGoalForMs))])));
          document.getElementById("history").replaceChildren(...doc.history.map((t) =>
            row([cell(new Date(t.at).toLocaleTimeString()), cell(t.group), cell(t.member), cell(t.partition == null ? t.event : `${t.event} (partition ${t.partition})`), cell(t.reason), cell(t.token), cell(ms(t.activeForMs))])));
        }
        render(JSON.parse(document.getElementById("initial").textContent));
        const live = document.getElementById("live");
        const events = new EventSource("events");
        events.onmessage = (e) => { live.className = "badge"; live.textContent = "live"; render(JSON.parse(e.data)); };
        events.onerror = () => { live.className = "badge off"; live.textContent = "offline"; };
        </script>
        </body>
        </html>
        """
}
