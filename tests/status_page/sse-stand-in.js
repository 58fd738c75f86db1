// A stand-in for GET /api/v1/helm/releases/events in front of a helmq-api
// that lacks the route (tests/status_page.t): everything else is proxied to
// helmq-api unchanged; the events route is served as the route's contract
// says (Server-Sent Events, scoped by the bearer token: "id: <resume token>",
// "event: release", "data: <the event as one line of JSON>"), from the events
// topic read by `helmq events --follow`. So the page's own SSE client (the
// fetch() reader, the framing, the reconnect with Last-Event-ID) runs for
// real before the route is merged. To exercise a reconnect it ends the first
// stream after its first event. GET /__stand-in answers what it saw: each
// stream's Last-Event-ID and the ids it sent.
//
//   node sse-stand-in.js PORT API_URL TOKENS_FILE HELMQ_BIN_DIR
'use strict';
const http = require('http');
const fs = require('fs');
const { spawn } = require('child_process');
const readline = require('readline');

const [port, apiUrl, tokensFile, binDir] = process.argv.slice(2);
const api = new URL(apiUrl);
const tokens = new Map(); // token -> tenant UUID, or null for admin
for (const line of fs.readFileSync(tokensFile, 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length === 3 && !f[0].startsWith('#')) tokens.set(f[0], f[2] === 'admin' ? null : f[2]);
}

const started = Date.now();
const sent = []; // {id, ev}: every event relayed, for resuming
const clients = new Set();
const seen = { streams: [] };

function frame(res, item) {
    res.write(`id: ${item.id}\nevent: release\ndata: ${JSON.stringify(item.ev)}\n\n`);
}

function relay(item) {
    for (const c of clients) {
        if (c.tenant && c.tenant !== item.ev.tenantId) continue;
        frame(c.res, item);
        c.log.sent.push(item.id);
        if (c.drop) {
            clients.delete(c);
            c.res.end(); // the first stream drops after its first event
        }
    }
}

const follow = spawn(`${binDir}/helmq`, ['events', '--follow'], { stdio: ['ignore', 'pipe', 'ignore'] });
readline.createInterface({ input: follow.stdout }).on('line', (line) => {
    let ev;
    try {
        ev = JSON.parse(line);
    } catch (e) {
        return;
    }
    const at = typeof ev.occurredAt === 'number' ? ev.occurredAt : Date.parse(ev.occurredAt);
    if (!(at >= started)) return; // only what happens from now on
    const item = { id: `${ev._partition}:${ev._offset}`, ev };
    delete ev._partition;
    delete ev._offset;
    sent.push(item);
    relay(item);
});

function events(req, res) {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization || '');
    if (!m || !tokens.has(m[1])) {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end('{"error":"invalid bearer token"}');
        return;
    }
    const last = req.headers['last-event-id'] || null;
    const log = { lastEventId: last, sent: [] };
    seen.streams.push(log);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.write(': stand-in for the events route\nretry: 500\n\n');
    const c = { res, tenant: tokens.get(m[1]), log, drop: seen.streams.length === 1 };
    if (last) {
        const i = sent.findIndex((s) => s.id === last);
        for (const item of sent.slice(i + 1)) {
            if (!c.tenant || c.tenant === item.ev.tenantId) {
                frame(res, item);
                log.sent.push(item.id);
            }
        }
    }
    clients.add(c);
    req.on('close', () => clients.delete(c));
}

http.createServer((req, res) => {
    const path = req.url.split('?')[0];
    if (path === '/__stand-in') {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(seen));
        return;
    }
    if (path === '/api/v1/helm/releases/events' && req.method === 'GET') return events(req, res);
    const up = http.request({ host: api.hostname, port: api.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
    });
    up.on('error', () => {
        res.writeHead(502);
        res.end();
    });
    req.pipe(up);
}).listen(Number(port), '127.0.0.1', () => console.log('listening'));

process.on('SIGTERM', () => {
    follow.kill();
    process.exit(0);
});
