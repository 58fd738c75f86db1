// helmq's status page: lists the releases a bearer token sees, shows a
// release's history, and follows changes live.
//
// Live updates come from GET /api/v1/helm/releases/events (Server-Sent
// Events). EventSource cannot send an Authorization header, so the stream is
// read with fetch() and its framing parsed here (id:, event:, data:, retry:,
// comments, dispatch on a blank line); after a drop it reconnects with
// Last-Event-ID and a growing backoff. When the route is missing (404, or 400
// from a helmq-api that reads "events" as a releaseId) the page says so and
// polls the list every 2 s instead.
'use strict';

(function () {
    const API = '/api/v1/helm/releases';
    const EVENTS = API + '/events';
    const TOKEN_KEY = 'helmq.token';
    const POLL_MS = 2000;
    const BACKOFF_MIN_MS = 500;
    const BACKOFF_MAX_MS = 15000;

    const $ = (id) => document.getElementById(id);
    const releases = new Map(); // releaseId -> release (the list's fields)
    let token = null;
    let selected = null; // releaseId whose history is shown
    let session = 0; // bumped on every sign-in/out: stale loops stop
    let lastEventId = null;
    let pollTimer = null;

    // --- the indicator and errors ------------------------------------------------

    function indicator(state, text) {
        const el = $('live');
        el.dataset.state = state;
        el.textContent = text;
    }

    function showError(msg) {
        const el = $('error');
        el.textContent = msg || '';
        el.hidden = !msg;
    }

    // --- API calls ------------------------------------------------------------------

    class HttpError extends Error {
        constructor(status, msg) {
            super(msg);
            this.status = status;
        }
    }

    async function getJson(path) {
        const res = await fetch(path, { headers: { Authorization: 'Bearer ' + token, Accept: 'application/json' } });
        if (!res.ok) {
            let msg = res.status + ' ' + res.statusText;
            try {
                const body = await res.json();
                if (body && body.error) msg = body.error;
            } catch (e) {
                /* not JSON: keep the status line */
            }
            throw new HttpError(res.status, msg);
        }
        return res.json();
    }

    // --- rendering ------------------------------------------------------------------

    function cell(tr, text, cls) {
        const td = document.createElement('td');
        if (cls) td.className = cls;
        td.textContent = text == null ? '' : String(text);
        tr.appendChild(td);
        return td;
    }

    function badge(status) {
        const span = document.createElement('span');
        span.className = 'badge ' + String(status || '').replace(/[^a-z_-]/gi, '');
        span.textContent = status || 'unknown';
        return span;
    }

    function badgeCell(tr, status) {
        const td = document.createElement('td');
        td.className = 'status';
        td.appendChild(badge(status));
        tr.appendChild(td);
    }

    function timeCell(tr, iso) {
        const td = document.createElement('td');
        if (iso) {
            const t = document.createElement('time');
            t.dateTime = iso;
            const d = new Date(iso);
            t.textContent = isNaN(d) ? iso : d.toLocaleString();
            t.title = iso;
            td.appendChild(t);
        }
        tr.appendChild(td);
    }

    function order(a, b) {
        return (
            String(a.namespace).localeCompare(String(b.namespace)) ||
            String(a.releaseName).localeCompare(String(b.releaseName)) ||
            String(a.releaseId).localeCompare(String(b.releaseId))
        );
    }

    function rowFor(r) {
        const tr = document.createElement('tr');
        tr.dataset.releaseId = r.releaseId;
        tr.tabIndex = 0;
        tr.setAttribute('aria-selected', String(r.releaseId === selected));
        const name = document.createElement('th'); // the row's header: the release's name
        name.scope = 'row';
        name.className = 'name';
        name.textContent = r.releaseName;
        tr.appendChild(name);
        cell(tr, r.namespace, 'namespace');
        cell(tr, r.tenantId, 'tenant mono');
        badgeCell(tr, r.status);
        cell(tr, r.revision, 'revision num');
        cell(tr, (r.chartName || '') + (r.chartVersion ? ' ' + r.chartVersion : ''), 'chart');
        timeCell(tr, r.updatedAt);
        return tr;
    }

    // Redraws the list; the rows named in flash are highlighted briefly.
    function render(flash) {
        const tbody = $('releases').tBodies[0];
        const rows = Array.from(releases.values()).sort(order);
        const frag = document.createDocumentFragment();
        for (const r of rows) {
            const tr = rowFor(r);
            if (flash && flash.has(r.releaseId)) tr.classList.add('flash');
            frag.appendChild(tr);
        }
        tbody.replaceChildren(frag);
        $('count').textContent = '(' + rows.length + ')';
        $('empty').hidden = rows.length > 0;
    }

    function renderHistory(release, entries) {
        $('history').hidden = false;
        $('history-title').textContent =
            'History of ' + release.releaseName + ' (' + release.namespace + ')';
        const tbody = $('history-table').tBodies[0];
        const frag = document.createDocumentFragment();
        for (const h of entries.slice().sort((a, b) => b.revision - a.revision)) {
            const tr = document.createElement('tr');
            tr.dataset.revision = h.revision;
            cell(tr, h.revision, 'revision num');
            cell(tr, h.chartVersion, 'chart-version');
            cell(tr, h.appVersion, 'app-version');
            badgeCell(tr, h.status);
            cell(tr, h.description, 'description');
            cell(tr, h.performedBy, 'performed-by');
            timeCell(tr, h.createdAt);
            frag.appendChild(tr);
        }
        tbody.replaceChildren(frag);
    }

    // --- the list, the history ----------------------------------------------------------

    async function loadList(flashChanged) {
        const list = await getJson(API);
        const changed = new Set();
        const seen = new Set();
        for (const r of list) {
            const old = releases.get(r.releaseId);
            if (old && (old.status !== r.status || old.revision !== r.revision)) changed.add(r.releaseId);
            if (!old && flashChanged) changed.add(r.releaseId);
            releases.set(r.releaseId, r);
            seen.add(r.releaseId);
        }
        for (const id of Array.from(releases.keys())) if (!seen.has(id)) releases.delete(id);
        render(flashChanged ? changed : null);
        if (selected && changed.has(selected)) loadHistory(selected);
    }

    // Shows the release's history. want ({revision, status}, from an event)
    // is the revision the history must show: the stream can be ahead of the
    // projection the history is read from, so until it shows it the history
    // is asked again, every 250 ms for up to 5 s.
    async function loadHistory(id, want, tries) {
        const mine = session;
        try {
            const entries = await getJson(API + '/' + encodeURIComponent(id) + '/history');
            if (mine !== session || selected !== id) return;
            renderHistory(releases.get(id) || { releaseName: id, namespace: '' }, entries);
            const shown = !want || (Array.isArray(entries) && entries.some(function (e) {
                return Number(e.revision) === Number(want.revision) && e.status === want.status;
            }));
            if (!shown && (tries || 0) < 20)
                setTimeout(function () { loadHistory(id, want, (tries || 0) + 1); }, 250);
        } catch (e) {
            if (mine === session) failed(e);
        }
    }

    function select(id) {
        selected = id;
        for (const tr of $('releases').tBodies[0].rows)
            tr.setAttribute('aria-selected', String(tr.dataset.releaseId === id));
        loadHistory(id);
    }

    // occurredAt as RFC 3339 text (events may carry epoch milliseconds).
    function isoTime(t) {
        if (typeof t === 'number') return new Date(t).toISOString();
        return t || null;
    }

    // An event carries the release's whole current state: upsert its row.
    function applyEvent(ev) {
        if (!ev || !ev.releaseId) return;
        const old = releases.get(ev.releaseId);
        if (old && Number(old.revision) > Number(ev.revision)) return; // an older event, late
        const r = Object.assign({}, old || {}, {
            releaseId: ev.releaseId,
            tenantId: ev.tenantId,
            namespace: ev.namespace,
            releaseName: ev.releaseName,
            status: ev.status,
            revision: ev.revision,
            chartName: ev.chartName,
            chartVersion: ev.chartVersion,
            appVersion: ev.appVersion,
            description: ev.description,
            updatedAt: isoTime(ev.occurredAt) || (old && old.updatedAt),
        });
        releases.set(r.releaseId, r);
        render(new Set([r.releaseId]));
        if (selected === r.releaseId) loadHistory(r.releaseId, { revision: ev.revision, status: ev.status });
    }

    // --- Server-Sent Events over fetch() -----------------------------------------------

    // Parses the stream's text as it arrives; calls onMessage({id, event, data}).
    function sseParser(onMessage, onRetry) {
        let buf = '';
        let data = [];
        let event = '';
        let sawCR = false;
        function line(l) {
            if (l === '') {
                if (data.length) onMessage({ id: lastEventId, event: event || 'message', data: data.join('\n') });
                data = [];
                event = '';
                return;
            }
            if (l[0] === ':') return; // a comment (keep-alive)
            const colon = l.indexOf(':');
            const field = colon < 0 ? l : l.slice(0, colon);
            let value = colon < 0 ? '' : l.slice(colon + 1);
            if (value[0] === ' ') value = value.slice(1);
            if (field === 'data') data.push(value);
            else if (field === 'event') event = value;
            else if (field === 'id') {
                if (value.indexOf('\0') < 0) lastEventId = value;
            } else if (field === 'retry' && /^\d+$/.test(value)) onRetry(Number(value));
        }
        return function feed(text) {
            buf += text;
            let i = 0;
            let start = 0;
            for (; i < buf.length; i++) {
                const c = buf[i];
                if (c === '\n' && sawCR) {
                    sawCR = false;
                    start = i + 1;
                    continue;
                }
                sawCR = false;
                if (c === '\r' || c === '\n') {
                    line(buf.slice(start, i));
                    sawCR = c === '\r';
                    start = i + 1;
                }
            }
            buf = buf.slice(start);
        };
    }

    async function follow(mine) {
        let backoff = BACKOFF_MIN_MS;
        let first = true;
        while (mine === session) {
            let res;
            const headers = { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' };
            if (lastEventId) headers['Last-Event-ID'] = lastEventId;
            try {
                res = await fetch(EVENTS, { headers, cache: 'no-store' });
            } catch (e) {
                res = null;
            }
            if (mine !== session) return;
            // No such route in this helmq-api (404; 400 from one that reads
            // "events" as a malformed releaseId, 405): poll instead.
            if (res && [400, 404, 405, 501].includes(res.status)) {
                poll(mine);
                return;
            }
            if (res && res.status === 401) {
                failed(new HttpError(401, 'invalid bearer token'));
                return;
            }
            if (res && res.ok && res.body) {
                indicator('live', 'live: connected');
                backoff = BACKOFF_MIN_MS;
                // Whatever changed while not connected: the list again (not on the first connection).
                if (!first) loadList(true).catch(failed);
                first = false;
                const feed = sseParser(
                    (m) => {
                        if (m.event !== 'release') return;
                        try {
                            applyEvent(JSON.parse(m.data));
                        } catch (e) {
                            /* a malformed message: skip it */
                        }
                    },
                    (ms) => {
                        backoff = Math.max(ms, BACKOFF_MIN_MS);
                    },
                );
                const reader = res.body.getReader();
                const dec = new TextDecoder();
                try {
                    for (;;) {
                        const { value, done } = await reader.read();
                        if (done || mine !== session) break;
                        feed(dec.decode(value, { stream: true }));
                    }
                } catch (e) {
                    /* dropped */
                }
                try {
                    reader.cancel();
                } catch (e) {
                    /* already closed */
                }
                if (mine !== session) return;
            } else if (res && res.body) {
                try {
                    await res.body.cancel();
                } catch (e) {
                    /* nothing to cancel */
                }
            }
            indicator('reconnecting', 'reconnecting in ' + Math.round(backoff / 100) / 10 + ' s');
            await new Promise((r) => setTimeout(r, backoff));
            backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        }
    }

    function poll(mine) {
        indicator('polling', 'live updates unavailable: polling every 2 s');
        const tick = async () => {
            if (mine !== session) return;
            try {
                await loadList(true);
                if ($('live').dataset.state !== 'polling')
                    indicator('polling', 'live updates unavailable: polling every 2 s');
            } catch (e) {
                if (e.status === 401) return failed(e);
                indicator('reconnecting', 'polling: ' + e.message);
            }
            if (mine === session) pollTimer = setTimeout(tick, POLL_MS);
        };
        pollTimer = setTimeout(tick, POLL_MS);
    }

    // --- signing in and out ---------------------------------------------------------------

    function failed(e) {
        if (e && e.status === 401) {
            signOut();
            showError('The token was refused (401): enter another.');
            return;
        }
        showError(e && e.message ? e.message : String(e));
    }

    function signOut() {
        session++;
        clearTimeout(pollTimer);
        token = null;
        selected = null;
        lastEventId = null;
        sessionStorage.removeItem(TOKEN_KEY);
        releases.clear();
        render(null);
        $('history').hidden = true;
        $('logout').hidden = true;
        $('token').value = '';
        indicator('offline', 'not connected');
    }

    async function signIn(t) {
        session++;
        const mine = session;
        clearTimeout(pollTimer);
        token = t;
        selected = null;
        lastEventId = null;
        releases.clear();
        $('history').hidden = true;
        showError('');
        indicator('offline', 'loading…');
        try {
            await loadList(false);
        } catch (e) {
            if (mine === session) failed(e);
            return;
        }
        if (mine !== session) return;
        sessionStorage.setItem(TOKEN_KEY, t);
        $('logout').hidden = false;
        follow(mine);
    }

    document.addEventListener('DOMContentLoaded', () => {
        $('login').addEventListener('submit', (e) => {
            e.preventDefault();
            const t = $('token').value.trim();
            if (t) signIn(t);
        });
        $('logout').addEventListener('click', signOut);
        const tbody = $('releases').tBodies[0];
        tbody.addEventListener('click', (e) => {
            const tr = e.target.closest('tr');
            if (tr && tr.dataset.releaseId) select(tr.dataset.releaseId);
        });
        tbody.addEventListener('keydown', (e) => {
            const tr = e.target.closest('tr');
            if (tr && tr.dataset.releaseId && (e.key === 'Enter' || e.key === ' ')) {
                e.preventDefault();
                select(tr.dataset.releaseId);
            }
        });
        const saved = sessionStorage.getItem(TOKEN_KEY);
        if (saved) {
            $('token').value = saved;
            signIn(saved);
        }
    });
})();
