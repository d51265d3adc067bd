// A small real HTTP server for tests/http_spec.lua (Node's http module).
//   node httpd.js [--tls KEY_FILE CERT_FILE]      (--tls: HTTPS instead)
// Listens on 127.0.0.1 on a random free port and prints one line:
//   "<port> <closed_port>"
// where closed_port was free a moment ago (for "connection refused" tests).
//
// Endpoints (any method unless said):
//   /echo               200 JSON {method, url, headers, body}
//   /status/N           status N, body "status N"
//   /redirect/N         302 to /redirect/N-1; /redirect/0 is 200 "arrived"
//   /json, /badjson     a JSON document / a broken one
//   /headers            repeated X-Multi and Set-Cookie headers
//   /raw-headers        empty and obsolete folded header values (raw bytes: Node's own
//                       writer refuses them)
//   /set-cookie?k=v     Set-Cookie: k=v; Path=/ for each query item
//   /login              sets a cookie and redirects to /cookies
//   /cookies            body: the Cookie header received ("" if none)
//   /slow?ms=N          answers after N ms; /inflight counts those waiting
//   /bytes?n=N[&chunked=1]  N bytes of "x", with Content-Length unless chunked
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const net = require('net');

let inflight = 0;

function send(res, status, body, headers) {
  res.writeHead(status, Object.assign({ 'Content-Type': 'text/plain' }, headers || {}));
  res.end(body);
}

function handle(req, res, body) {
  const u = new URL(req.url, 'http://127.0.0.1');
  const parts = u.pathname.split('/').filter(Boolean);
  switch (parts[0]) {
    case 'echo':
      return send(res, 200, JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }),
        { 'Content-Type': 'application/json' });
    case 'status': {
      const code = Number(parts[1]);
      return send(res, code, 'status ' + code);
    }
    case 'redirect': {
      const n = Number(parts[1]);
      if (n > 0) return send(res, 302, '', { Location: '/redirect/' + (n - 1) });
      return send(res, 200, 'arrived');
    }
    case 'json':
      return send(res, 200, JSON.stringify({ name: 'dhrun', list: [1, 2, 3], ok: true, none: null }),
        { 'Content-Type': 'application/json' });
    case 'badjson':
      return send(res, 200, '{"name": "dhrun",', { 'Content-Type': 'application/json' });
    case 'headers':
      res.setHeader('X-Multi', ['a', 'b']);
      res.setHeader('Set-Cookie', ['one=1; Path=/', 'two=2, with comma; Path=/']);
      res.setHeader('X-Request-Id', req.headers['x-request-id'] || 'none');
      return send(res, 200, 'headers');
    case 'raw-headers':
      req.socket.end('HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Blank:   \r\nX-Folded: first\r\n  continued\r\n'
        + 'X-Fold-Empty:\r\n continued\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok');
      return undefined;
    case 'set-cookie': {
      const cookies = [];
      for (const [k, v] of u.searchParams) cookies.push(`${k}=${v}; Path=/`);
      return send(res, 200, 'set', { 'Set-Cookie': cookies });
    }
    case 'login':
      return send(res, 302, '', { 'Set-Cookie': 'session=s3cr3t; Path=/; HttpOnly', Location: '/cookies' });
    case 'cookies':
      return send(res, 200, req.headers.cookie || '');
    case 'slow': {
      inflight++;
      let done = false;
      const finish = () => { if (!done) { done = true; inflight--; } };
      const timer = setTimeout(() => { finish(); send(res, 200, 'slow'); }, Number(u.searchParams.get('ms')));
      res.on('close', () => { clearTimeout(timer); finish(); });
      return undefined;
    }
    case 'inflight':
      return send(res, 200, String(inflight));
    case 'bytes': {
      const n = Number(u.searchParams.get('n'));
      const data = 'x'.repeat(n);
      if (u.searchParams.get('chunked')) {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        // Two writes: Node sends a chunked body with no Content-Length.
        res.write(data.slice(0, n >> 1));
        return res.end(data.slice(n >> 1));
      }
      return send(res, 200, data, { 'Content-Length': String(n) });
    }
    default:
      return send(res, 404, 'not found');
  }
}

function onRequest(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => handle(req, res, Buffer.concat(chunks).toString('utf8')));
}

const server = process.argv[2] === '--tls'
  ? https.createServer({ key: fs.readFileSync(process.argv[3]), cert: fs.readFileSync(process.argv[4]) }, onRequest)
  : http.createServer(onRequest);

// A port that was free a moment ago: bind it, note it, close it.
const probe = net.createServer();
probe.listen(0, '127.0.0.1', () => {
  const closed = probe.address().port;
  probe.close(() => {
    server.listen(0, '127.0.0.1', () => {
      process.stdout.write(`${server.address().port} ${closed}\n`);
    });
  });
});

process.on('SIGTERM', () => process.exit(0));
