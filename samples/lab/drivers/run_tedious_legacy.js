// Run tedious 1.0.0 (before routing support) once: connect, log in, SELECT 1, close.
// Prints ONE JSON line (the client's view). Its API predates the `authentication` object.
// Usage: node run_tedious_legacy.js JSON
// tedious comes from samples/lab/out/node-legacy, installed by install.sh from
// drivers/legacy/package.json (kept out of drivers/node_modules, which holds today's tedious).
'use strict';
const path = require('path');
const legacy = path.join(__dirname, '..', 'out', 'node-legacy', 'node_modules', 'tedious');
const { Connection, Request } = require(legacy);

const a = JSON.parse(process.argv[2]);
const started = Date.now();
const version = require(path.join(legacy, 'package.json')).version;
let printed = false;
function finish(result) {
  if (printed) return;
  printed = true;
  result.driver = 'tedious';
  result.version = version;
  result.elapsed = (Date.now() - started) / 1000;
  process.stdout.write(JSON.stringify(result) + '\n');
}

if (a.encrypt !== 'off') {
  // Its TLS needs crypto.createCredentials, which today's Node.js no longer has.
  finish({ ok: false, error: 'lab: tedious 1.0.0 runs only with encryption off' });
  process.exit(0);
}
const conn = new Connection({
  server: a.host,
  userName: a.user,
  password: a.password,
  options: {
    port: a.port,
    database: a.database,
    encrypt: false,
    connectTimeout: a.timeout * 1000,
    requestTimeout: a.timeout * 1000,
    appName: 'tdslens-lab',
  },
});
conn.on('errorMessage', (m) => process.stderr.write(`server error ${m.number}: ${m.message}\n`));
conn.on('connect', (err) => {
  if (err) {
    finish({ ok: false, error: `${err.name}: ${err.code || ''} ${err.message}` });
    return;
  }
  const rows = [];
  const req = new Request('SELECT 1', (qerr) => {
    if (qerr) finish({ ok: false, error: `${qerr.name}: ${qerr.message}` });
    else finish({ ok: JSON.stringify(rows) === '[[1]]', rows });
    conn.close();
  });
  req.on('row', (cols) => rows.push(cols.map((c) => c.value)));
  conn.execSqlBatch(req);
});
conn.on('end', () => finish({ ok: false, error: 'lab: connection ended before a result' }));
setTimeout(() => {
  finish({ ok: false, error: 'lab: gave up waiting' });
  process.exit(0);
}, (a.timeout + 15) * 1000).unref();
