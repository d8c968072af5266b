// Run tedious once: connect, log in, SELECT 1, close. Prints ONE JSON line (the client's view).
// Usage: node --tls-keylog=FILE run_tedious.js JSON
'use strict';
const { Connection, Request } = require('tedious');

const a = JSON.parse(process.argv[2]);
const started = Date.now();
const version = require('tedious/package.json').version;
let printed = false;
function finish(result) {
  if (printed) return;
  printed = true;
  result.driver = 'tedious';
  result.version = version;
  result.elapsed = (Date.now() - started) / 1000;
  process.stdout.write(JSON.stringify(result) + '\n');
}

const encrypt = { off: false, on: true, strict: 'strict' }[a.encrypt];
const conn = new Connection({
  server: a.host,
  authentication: { type: 'default', options: { userName: a.user, password: a.password } },
  options: {
    port: a.port,
    database: a.database,
    encrypt,
    trustServerCertificate: true,
    connectTimeout: a.timeout * 1000,
    requestTimeout: a.timeout * 1000,
    readOnlyIntent: !!a.readonly,
    appName: 'tdslens-lab',
    connectionRetryInterval: 500,
    maxRetriesOnTransientErrors: 1,
  },
});
conn.on('error', (err) => finish({ ok: false, error: `${err.name}: ${err.message}` }));
conn.on('rerouting', () => {});
conn.connect((err) => {
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
setTimeout(() => {
  finish({ ok: false, error: 'lab: gave up waiting' });
  process.exit(0);
}, (a.timeout + 15) * 1000).unref();
