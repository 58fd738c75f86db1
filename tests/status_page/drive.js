// Drives helmq-api's status page in headless Chromium (puppeteer-core,
// Debian's /usr/bin/chromium) for tests/status_page.t. Prints one line per
// check, "ok<TAB>NAME" or "not ok<TAB>NAME<TAB>WHY", then "result<TAB>JSON":
// the live path the page used and when it showed each change.
//
// Environment: API_URL, ADMIN_TOKEN, ACME_TOKEN, GLOBEX_TOKEN, OTHER_TENANT,
// RELEASE_ID (a release of acme's with a history), SCREENSHOT (a .png path),
// CHROMIUM (default /usr/bin/chromium), INSTALL_BODY (a JSON file: the
// install to send while the page is open).
'use strict';
const fs = require('fs');
const puppeteer = require('puppeteer-core');

const E = process.env;
const URL = E.API_URL;
const API = URL + '/api/v1/helm/releases';
const WAIT_MS = 20000;
const result = {};
let failures = 0;

function check(cond, name, why) {
    if (cond) console.log(`ok\t${name}`);
    else {
        failures++;
        console.log(`not ok\t${name}\t${String(why || '').replace(/\s+/g, ' ').slice(0, 1500)}`);
    }
    return cond;
}

async function api(method, path, token, body) {
    const res = await fetch(API + path, {
        method,
        headers: Object.assign({ Authorization: 'Bearer ' + token }, body ? { 'Content-Type': 'application/json' } : {}),
        body,
    });
    const text = await res.text();
    return { status: res.status, json: text ? JSON.parse(text) : null };
}

// The page's table as data.
function tableRows(page, sel) {
    return page.$$eval(`${sel} tbody tr`, (trs) =>
        trs.map((tr) => ({
            id: tr.dataset.releaseId,
            cells: Array.from(tr.cells).map((td) => td.textContent.trim()),
            badge: (tr.querySelector('.badge') || {}).className,
            time: (tr.querySelector('time') || {}).dateTime || '',
            selected: tr.getAttribute('aria-selected'),
        })),
    );
}

// Console errors and uncaught exceptions of a page; a failed load of the
// events route (absent from this helmq-api: the page then polls) is expected.
function watchConsole(page, errors) {
    page.on('console', (m) => {
        if (m.type() !== 'error') return;
        const where = (m.location() && m.location().url) || '';
        if (/\/api\/v1\/helm\/releases\/events$/.test(where) && /status of 40[045]/.test(m.text())) return;
        errors.push(`console: ${m.text()} (${where})`);
    });
    page.on('pageerror', (e) => errors.push(`exception: ${e.message}`));
}

async function signIn(page, token) {
    await page.goto(URL + '/', { waitUntil: 'domcontentloaded' });
    await page.type('#token', token);
    await page.click('#login button[type=submit]');
}

async function waitRows(page, n) {
    await page.waitForFunction((k) => document.querySelectorAll('#releases tbody tr').length === k, {
        timeout: WAIT_MS,
        polling: 'mutation',
    }, n);
}

// Waits until the release's row shows status and revision; returns Date.now() then.
async function waitRow(page, id, status, revision) {
    await page.waitForFunction(
        (rid, st, rev) => {
            const tr = document.querySelector(`#releases tbody tr[data-release-id="${rid}"]`);
            return !!tr && tr.querySelector('.status').textContent === st && tr.querySelector('.revision').textContent === String(rev);
        },
        { timeout: WAIT_MS, polling: 'mutation' },
        id,
        status,
        revision,
    );
    return Date.now();
}

async function main() {
    const browser = await puppeteer.launch({
        executablePath: E.CHROMIUM || '/usr/bin/chromium',
        headless: true,
        args: (process.getuid() === 0 ? ['--no-sandbox'] : []).concat(['--disable-dev-shm-usage']),
    });
    try {
        await (E.MODE === 'sse' ? runSse(browser) : run(browser));
    } finally {
        await browser.close();
    }
}

async function run(browser) {
    const errors = [];
    const page = await browser.newPage();
    await page.setViewport({ width: 1280, height: 760 });
    watchConsole(page, errors);

    // 1. Served without a token; asks for one.
    const res = await page.goto(URL + '/', { waitUntil: 'domcontentloaded' });
    check(res.status() === 200 && /text\/html/.test(res.headers()['content-type']), 'GET / serves the page (200, text/html) without a token', `${res.status()} ${res.headers()['content-type']}`);
    check((await page.title()) === 'helmq: release status', 'the page has its title', await page.title());
    check((await page.$('#token')) !== null && (await page.$$('#releases tbody tr')).length === 0, 'it asks for a token and shows no release before one');

    // 2. An admin token: every release, as the API lists them.
    const all = (await api('GET', '', E.ADMIN_TOKEN)).json;
    await signIn(page, E.ADMIN_TOKEN);
    await waitRows(page, all.length).catch(() => {});
    let rows = await tableRows(page, '#releases');
    check(rows.length === all.length && all.length >= 3, `an admin token lists every release (${all.length})`, `page ${rows.length}, API ${all.length}`);
    const want = new Map(all.map((r) => [r.releaseId, r]));
    const bad = rows.filter((row) => {
        const r = want.get(row.id);
        return !r || row.cells[0] !== r.releaseName || row.cells[1] !== r.namespace || row.cells[2] !== r.tenantId ||
            row.cells[3] !== r.status || row.cells[4] !== String(r.revision) || row.cells[5] !== `${r.chartName} ${r.chartVersion}` ||
            !row.badge.split(' ').includes(r.status) || Date.parse(row.time) !== Date.parse(r.updatedAt);
    });
    check(bad.length === 0, 'each row: name, namespace, tenant, status badge, revision, chart and version, last change as the API has them', JSON.stringify(bad[0]));
    const tenants = new Set(rows.map((r) => r.cells[2]));
    check(tenants.size >= 2, 'the admin sees more than one tenant', [...tenants].join(' '));
    check((await page.evaluate(() => sessionStorage.getItem('helmq.token'))) === E.ADMIN_TOKEN, 'the token is kept in sessionStorage');

    // 3. The live path: SSE when the route exists, else polling.
    await page.waitForFunction(() => ['live', 'polling'].includes(document.getElementById('live').dataset.state), { timeout: WAIT_MS }).catch(() => {});
    const live = await page.$eval('#live', (el) => ({ state: el.dataset.state, text: el.textContent }));
    result.mode = live.state;
    result.indicator = live.text;

    // 4. A release's history.
    await page.click(`#releases tbody tr[data-release-id="${E.RELEASE_ID}"]`);
    const hist = (await api('GET', `/${E.RELEASE_ID}/history`, E.ADMIN_TOKEN)).json;
    await page.waitForFunction((k) => !document.getElementById('history').hidden && document.querySelectorAll('#history-table tbody tr').length === k, { timeout: WAIT_MS }, hist.length).catch(() => {});
    let hrows = await tableRows(page, '#history-table');
    const hwant = hist.slice().sort((a, b) => b.revision - a.revision)
        .map((h) => [String(h.revision), h.chartVersion, h.appVersion, h.status, h.description || '', h.performedBy || ''].join('|'));
    const hgot = hrows.map((r) => r.cells.slice(0, 6).join('|'));
    check(hist.length >= 2 && JSON.stringify(hgot) === JSON.stringify(hwant), `clicking a release shows its history (${hist.length} revisions: revision, chart and app version, status, description, performed by)`, `page ${JSON.stringify(hgot)} API ${JSON.stringify(hwant)}`);
    check(hrows.every((r, i) => Date.parse(r.time) === Date.parse(hist.slice().sort((a, b) => b.revision - a.revision)[i].createdAt)), 'and each revision\'s time');
    rows = await tableRows(page, '#releases');
    check(rows.filter((r) => r.selected === 'true').map((r) => r.id).join() === E.RELEASE_ID, 'the chosen row is marked aria-selected');

    // 5. Changes while the page is open: a new release appears; the shown one changes, with its history.
    const body = fs.readFileSync(E.INSTALL_BODY, 'utf8');
    const inst = await api('POST', '', E.ACME_TOKEN, body);
    check(inst.status === 202, 'an install sent through the API while the page is open: 202', JSON.stringify(inst));
    result.install = { commandId: inst.json.commandId, releaseId: inst.json.releaseId };
    try {
        result.install.shownAt = await waitRow(page, inst.json.releaseId, 'deployed', 1);
        check(true, 'the new release appears on the page, deployed at revision 1');
    } catch (e) {
        check(false, 'the new release appears on the page, deployed at revision 1', e.message);
    }
    check(await page.$eval(`#releases tbody tr[data-release-id="${inst.json.releaseId}"]`, (tr) => tr.classList.contains('flash')).catch(() => false), 'its row is highlighted');
    const del = await api('DELETE', `/${E.RELEASE_ID}?reason=status%20page%20test`, E.ACME_TOKEN);
    check(del.status === 202, 'an uninstall of the shown release: 202', JSON.stringify(del));
    result.uninstall = { commandId: del.json.commandId, releaseId: E.RELEASE_ID };
    const rev = hist.length + 1;
    try {
        result.uninstall.shownAt = await waitRow(page, E.RELEASE_ID, 'uninstalled', rev);
        check(true, `its row changes to uninstalled, revision ${rev}`);
    } catch (e) {
        check(false, `its row changes to uninstalled, revision ${rev}`, e.message);
    }
    const histOk = await page.waitForFunction((k) => {
        const tr = document.querySelector('#history-table tbody tr');
        return document.querySelectorAll('#history-table tbody tr').length === k && tr.cells[3].textContent === 'uninstalled';
    }, { timeout: WAIT_MS }, rev).then(() => true, () => false);
    check(histOk, `the history panel is refreshed: revision ${rev} uninstalled on top`, JSON.stringify((await tableRows(page, '#history-table')).map((r) => r.cells.slice(0, 4))));

    // 6. Reloaded, the tab keeps its token; the screenshot for the README.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await waitRows(page, all.length + 1).then(() => true, () => false);
    rows = await tableRows(page, '#releases');
    check(rows.length === all.length + 1, 'after a reload the page signs in again from sessionStorage', `${rows.length} rows`);
    await page.click(`#releases tbody tr[data-release-id="${E.RELEASE_ID}"]`);
    await page.waitForFunction(() => !document.getElementById('history').hidden && document.querySelectorAll('#history-table tbody tr').length > 1, { timeout: WAIT_MS }).catch(() => {});
    await page.waitForFunction(() => ['live', 'polling'].includes(document.getElementById('live').dataset.state), { timeout: WAIT_MS }).catch(() => {});
    await new Promise((r) => setTimeout(r, 2300)); // the highlight fades
    await page.screenshot({ path: E.SCREENSHOT, fullPage: true });

    // 7. A tenant token: only that tenant's releases.
    const ctx = await browser.createBrowserContext();
    const tpage = await ctx.newPage();
    watchConsole(tpage, errors);
    const mine = (await api('GET', '', E.GLOBEX_TOKEN)).json;
    await signIn(tpage, E.GLOBEX_TOKEN);
    await waitRows(tpage, mine.length).catch(() => {});
    const trows = await tableRows(tpage, '#releases');
    check(mine.length >= 1 && trows.length === mine.length && trows.every((r) => r.cells[2] === E.OTHER_TENANT), `a tenant token shows only its tenant's releases (${mine.length})`, JSON.stringify(trows.map((r) => r.cells.slice(0, 3))));
    check(trows.length < all.length && !trows.some((r) => r.id === E.RELEASE_ID), 'and none of another tenant\'s');
    await ctx.close();

    // 8. A wrong token: said so, nothing listed.
    const ctx2 = await browser.createBrowserContext();
    const bpage = await ctx2.newPage();
    await signIn(bpage, 'not-a-token');
    const refused = await bpage.waitForFunction(() => !document.getElementById('error').hidden, { timeout: WAIT_MS }).then(() => true, () => false);
    check(refused && /401/.test(await bpage.$eval('#error', (el) => el.textContent)) && (await bpage.$$('#releases tbody tr')).length === 0, 'a refused token is said so (401) and lists nothing');
    await ctx2.close();

    check(errors.length === 0, 'no console errors or exceptions', errors.join(' | '));
    console.log(`result\t${JSON.stringify(result)}`);
}

// Through the events route's stand-in (sse-stand-in.js): the page's own SSE
// client, its reconnect with Last-Event-ID, and how soon a change shows.
async function runSse(browser) {
    const errors = [];
    const page = await browser.newPage();
    watchConsole(page, errors);
    const all = (await api('GET', '', E.ADMIN_TOKEN)).json;
    await signIn(page, E.ADMIN_TOKEN);
    await waitRows(page, all.length).catch(() => {});
    const isLive = () => page.waitForFunction(() => document.getElementById('live').dataset.state === 'live', { timeout: WAIT_MS }).then(() => true, () => false);
    check(await isLive(), 'SSE: the indicator says live', await page.$eval('#live', (el) => el.textContent));
    result.mode = await page.$eval('#live', (el) => el.dataset.state);
    result.indicator = await page.$eval('#live', (el) => el.textContent);
    // The stand-in drops the first stream after its first event: the page reconnects and resumes.
    const states = [];
    await page.exposeFunction('noteState', (s) => states.push(s));
    await page.evaluate(() => new MutationObserver(() => window.noteState(document.getElementById('live').dataset.state)).observe(document.getElementById('live'), { attributes: true }));
    const inst = await api('POST', '', E.ACME_TOKEN, fs.readFileSync(E.INSTALL_BODY, 'utf8'));
    check(inst.status === 202, 'SSE: an install: 202', JSON.stringify(inst));
    const appeared = await waitRow(page, inst.json.releaseId, 'deployed', 1).then(() => true, (e) => e.message);
    check(appeared === true, 'SSE: the new release appears, deployed at revision 1', appeared);
    check(await isLive(), 'SSE: live again after the stream dropped');
    const standIn = await (await fetch(E.API_URL + '/__stand-in')).json();
    const [first, second] = standIn.streams;
    check(first && first.lastEventId === null && second && first.sent.length === 1 && second.lastEventId === first.sent[0],
        'SSE: after the drop the page reconnected with Last-Event-ID: the id of the last event it had', JSON.stringify(standIn));
    check(states.includes('reconnecting'), 'SSE: the indicator said reconnecting meanwhile', states.join(','));
    // A change on the resumed stream: how soon it shows.
    const del = await api('DELETE', `/${inst.json.releaseId}?reason=sse`, E.ACME_TOKEN);
    check(del.status === 202, 'SSE: an uninstall: 202', JSON.stringify(del));
    result.uninstall = { commandId: del.json.commandId, releaseId: inst.json.releaseId };
    try {
        result.uninstall.shownAt = await waitRow(page, inst.json.releaseId, 'uninstalled', 2);
        check(true, 'SSE: its row changes to uninstalled, revision 2');
    } catch (e) {
        check(false, 'SSE: its row changes to uninstalled, revision 2', e.message);
    }
    check(errors.length === 0, 'SSE: no console errors or exceptions', errors.join(' | '));
    console.log(`result\t${JSON.stringify(result)}`);
}

main().then(
    () => process.exit(failures ? 1 : 0),
    (e) => {
        console.log(`not ok\tthe browser session ran to its end\t${e.stack || e}`);
        console.log(`result\t${JSON.stringify(result)}`);
        process.exit(1);
    },
);
