// Checks helmq-api against its OpenAPI document (tests/openapi.t).
//
//   node check.js routes DOC
//       prints the document's routes, one "METHOD /path/:param" a line,
//       sorted, in the form helmq-api --help and the README's table use
//   node check.js validate DOC EXCHANGES
//       EXCHANGES holds JSON lines {name, method, path, status, headers,
//       body[, request]}: requests made to the running helmq-api and their
//       answers. Each answer must be one the document describes for that
//       operation: its status documented, its required headers present and
//       valid, its media type one the response lists, and its body valid
//       against the response's schema (ajv, JSON Schema 2020-12 as OpenAPI
//       3.1 uses it, with ajv-formats). A method a path does not list must
//       have been answered as components.responses.MethodNotAllowed says,
//       with an Allow header naming the path's methods. A 2xx answer's
//       request body must be valid against the operation's requestBody.
//       Prints "ok<TAB>NAME<TAB>METHOD ROUTE<TAB>STATUS" (the route as
//       routes prints it; HEAD as GET) or "not ok<TAB>NAME<TAB>WHY" per exchange;
//       exits 1 when any is not ok.
'use strict';
const fs = require('fs');
const Ajv2020 = require('ajv/dist/2020');
const addFormats = require('ajv-formats');

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const DOC_ID = 'https://helmq.invalid/openapi.json';

// A path template as helmq-api --help and the README write it: /a/{b} -> /a/:b.
const route = (path) => path.replace(/\{([^}]+)\}/g, ':$1');

function routes(doc) {
    const out = [];
    for (const [path, item] of Object.entries(doc.paths))
        for (const m of METHODS) if (item[m]) out.push(`${m.toUpperCase()} ${route(path)}`);
    return out.sort();
}

// A JSON pointer into the document, for ajv to compile what it points at.
function pointer(...parts) {
    return '#/' + parts.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
}

function deref(doc, obj) {
    while (obj && obj.$ref) {
        if (!obj.$ref.startsWith('#/')) throw new Error(`external $ref ${obj.$ref}`);
        obj = obj.$ref
            .slice(2)
            .split('/')
            .reduce((o, p) => o[p.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
    }
    return obj;
}

// The pointer of a response object (following a $ref to components/responses).
function responsePointer(doc, base, resp) {
    return resp.$ref ? resp.$ref : base;
}

// The document's path template matching a concrete path: same number of
// segments, literal segments equal; the most literal one wins (as helmq-api
// routes /releases/summary before /releases/{releaseId}).
function matchPath(doc, path) {
    let p = path.split('?')[0];
    if (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
    const segs = p.split('/');
    let best = null,
        bestScore = -1;
    for (const tmpl of Object.keys(doc.paths)) {
        const ts = tmpl.split('/');
        if (ts.length !== segs.length) continue;
        let score = 0,
            ok = true;
        for (let i = 0; i < ts.length && ok; i++) {
            if (/^\{[^}]+\}$/.test(ts[i])) ok = segs[i].length > 0;
            else if (ts[i] === segs[i]) score++;
            else ok = false;
        }
        if (ok && score > bestScore) {
            best = tmpl;
            bestScore = score;
        }
    }
    return best;
}

function validate(doc, exchanges) {
    const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true }) // type: [string, null] is OpenAPI 3.1's nullable;
    addFormats(ajv);
    // The document is registered as a schema that is never compiled whole:
    // refs point into it. Its top-level fields are no JSON Schema keywords.
    for (const k of Object.keys(doc)) if (!k.startsWith('$')) ajv.addKeyword(k);
    ajv.addSchema(doc, DOC_ID);
    const compiled = new Map();
    const schemaAt = (ptr) => {
        if (!compiled.has(ptr)) compiled.set(ptr, ajv.compile({ $ref: DOC_ID + ptr }));
        return compiled.get(ptr);
    };
    const check = (ptr, value, what) => {
        const v = schemaAt(ptr);
        if (!v(value)) throw new Error(`${what} is not valid against ${ptr}: ${ajv.errorsText(v.errors)}`);
    };
    let failed = 0;
    for (const x of exchanges) {
        try {
            const tmpl = matchPath(doc, x.path);
            if (!tmpl) throw new Error(`${x.path}: no path of the document matches`);
            const item = doc.paths[tmpl];
            const method = x.method === 'HEAD' ? 'get' : x.method.toLowerCase();
            const op = item[method];
            let respPtr, resp;
            if (!op) {
                if (x.status !== 405) throw new Error(`${x.method} ${tmpl} is not documented, yet answered ${x.status}`);
                const allow = METHODS.filter((m) => item[m]).map((m) => m.toUpperCase());
                if (item.get && !item.head) allow.push('HEAD');
                const got = (x.headers.allow || '').split(',').map((s) => s.trim()).filter(Boolean);
                if (got.sort().join(',') !== allow.sort().join(','))
                    throw new Error(`Allow: ${x.headers.allow} differs from the document's ${allow.join(', ')}`);
                respPtr = pointer('components', 'responses', 'MethodNotAllowed');
                resp = deref(doc, { $ref: respPtr });
            } else {
                const r = op.responses[String(x.status)];
                if (!r)
                    throw new Error(`${x.status} is not documented for ${method.toUpperCase()} ${tmpl} ` +
                        `(documented: ${Object.keys(op.responses).join(' ')})`);
                respPtr = responsePointer(doc, pointer('paths', tmpl, method, 'responses', x.status), r);
                resp = deref(doc, r);
                if (x.request !== undefined && x.status >= 200 && x.status < 300) {
                    if (!op.requestBody) throw new Error('a body was sent to an operation that takes none');
                    check(pointer('paths', tmpl, method, 'requestBody', 'content', 'application/json', 'schema'),
                        JSON.parse(x.request), 'the request body');
                }
            }
            for (const [name, h] of Object.entries(resp.headers || {})) {
                const hv = deref(doc, h);
                const value = x.headers[name.toLowerCase()];
                if (value === undefined) {
                    if (hv.required) throw new Error(`header ${name} is missing`);
                    continue;
                }
                if (hv.schema) check(respPtr + '/headers/' + name + '/schema', value, `header ${name}`);
            }
            const ctype = (x.headers['content-type'] || '').split(';')[0].trim();
            if (!resp.content) {
                if (x.body.length) throw new Error('a body where the document describes none');
            } else {
                const media = resp.content[ctype];
                if (!media)
                    throw new Error(`Content-Type ${ctype} is not one of ${Object.keys(resp.content).join(', ')}`);
                if (x.method === 'HEAD') {
                    if (x.body.length) throw new Error('HEAD answered with a body');
                } else if (media.schema) {
                    const mptr = `${respPtr}/content/${ctype.replace(/~/g, '~0').replace(/\//g, '~1')}/schema`;
                    let body = x.body;
                    if (ctype === 'application/json') {
                        try {
                            body = JSON.parse(x.body);
                        } catch (e) {
                            throw new Error(`the body is not JSON: ${e.message}`);
                        }
                    }
                    check(mptr, body, 'the body');
                }
            }
            console.log(`ok\t${x.name}\t${x.method === 'HEAD' ? 'GET' : x.method} ${route(tmpl)}\t${x.status}`);
        } catch (e) {
            failed++;
            console.log(`not ok\t${x.name}\t${e.message.replace(/\s+/g, ' ')}`);
        }
    }
    return failed === 0;
}

const [mode, docFile, exFile] = process.argv.slice(2);
const doc = JSON.parse(fs.readFileSync(docFile, 'utf8'));
if (mode === 'routes') {
    console.log(routes(doc).join('\n'));
} else if (mode === 'validate') {
    const lines = fs.readFileSync(exFile, 'utf8').split('\n').filter((l) => l.trim());
    process.exit(validate(doc, lines.map((l) => JSON.parse(l))) ? 0 : 1);
} else {
    console.error('usage: check.js routes DOC | validate DOC EXCHANGES');
    process.exit(2);
}
