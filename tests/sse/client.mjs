// An EventSource client helmq did not write (npm eventsource, the WHATWG
// EventSource for Node): reads a helmq-api event stream and prints each
// "release" event as a line of JSON {"id": lastEventId, "event": data}.
// Usage: node client.mjs URL TOKEN COUNT TIMEOUT_MS [LAST_EVENT_ID]
// Stops GRACE ms after COUNT events (to catch any extra, repeated event), or at
// TIMEOUT_MS; exits 0 once it connected. Prints "open" to stderr when connected.
import { createRequire } from 'node:module';
const require = createRequire(process.env.NODE_MODULES + '/');
const { EventSource } = require('eventsource');
const [url, token, count, timeout, lastId] = process.argv.slice(2);
const want = Number(count);
let n = 0;
const es = new EventSource(url, {
    fetch: (input, init) =>
        fetch(input, {
            ...init,
            headers: { ...init.headers, Authorization: `Bearer ${token}`, ...(lastId ? { 'Last-Event-ID': lastId } : {}) },
        }),
});
const stop = (code) => { es.close(); process.exit(code); };
es.addEventListener('open', () => process.stderr.write('open\n'));
es.addEventListener('release', (e) => {
    process.stdout.write(JSON.stringify({ id: e.lastEventId, event: JSON.parse(e.data) }) + '\n');
    if (++n === want) setTimeout(() => stop(0), 1500);
});
es.addEventListener('error', (e) => process.stderr.write(`error: ${e.message ?? ''} ${e.code ?? ''}\n`));
setTimeout(() => stop(n >= want ? 0 : 3), Number(timeout));
