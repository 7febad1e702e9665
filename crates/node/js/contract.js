'use strict';
// The lab's contract (crates/service/CONTRACT.md) for every Node kind: the
// flags, the ready line, the endpoints with their validation and answers,
// the connection limits, `x-worker`, the request counters and the graceful
// shutdown. It is the one place these exist in JavaScript: the kinds
// (cluster.js, threads.js, single.js) only say where a job runs and what
// `/stats` says, as the Rust models do through service's `Model` trait.
//
// Answers match crates/service/src/http.rs byte for byte where Node lets
// them (bodies, content types, status codes, `allow`, `retry-after`).
// Where Node's HTTP server decides the answer itself, the differences are
// the documented deviations in CONTRACT.md's Node section.

const fs = require('node:fs');
const { Readable, pipeline } = require('node:stream');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const { monitorEventLoopDelay, performance } = require('node:perf_hooks');

const dataset = require('./dataset');
const { cpu, crash, CRASH_MODES } = require('./work');

// The largest request body accepted; larger ones get 413.
const MAX_BODY = 64 * 1024;
// The request headers Node keeps (`server.maxHeadersCount`): the contract's
// 64. Node drops the rest silently rather than answering 431.
const MAX_HEADERS = 64;
// The largest request head (request line and headers) Node parses
// (`maxHeaderSize`): the Rust servers' limit, hyper's default read buffer
// of 8 KiB + 100 * 4 KiB. Over it, Node answers 431.
const MAX_HEAD_BYTES = 8192 + 4096 * 100;
// The listen backlog, as the Rust servers' `bind`.
const BACKLOG = 1024;
// Node's timers hold at most 2^31 - 1 ms; longer ones would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;
// The loop-lag histogram's timer, as the Rust ticker's 10 ms.
const LAG_RESOLUTION_MS = 10;

const U64_MAX = 2n ** 64n - 1n;
const ITERS = { min: 1n, max: 10000000n, default: 5000n };
// Parts per `/cpu` request; iters × parts is bounded by ITERS.max too.
const PARTS = { min: 1n, max: 64n, default: 1n };
const IO_MS = { min: 0n, max: 60000n, default: 20n };
// `/stream` and `/buffer`: N MiB in 64 KiB chunks, each one letter, a to z,
// cycling (crates/service/src/download.rs).
const MB = { min: 1n, max: 64n, default: 1n };
const CHUNK = 64 * 1024;
const MIB = 1024 * 1024;
const OCTETS = 'application/octet-stream';

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';

// Per-socket and per-response bookkeeping, out of the way of Node's own
// properties.
const ACTIVE = Symbol('requests in progress on this connection');
const REPLIED = Symbol('answered');

// ---------------------------------------------------------------------------
// Logging: stderr only (stdout carries the ready line and nothing else).

function logger(who) {
  const write = (level, message) => {
    process.stderr.write(`${new Date().toISOString()} ${level} ${who}: ${message}\n`);
  };
  return {
    info: (message) => write(' INFO', message),
    warn: (message) => write(' WARN', message),
  };
}

// One line on stderr, then exit: 2 for bad flags, 1 for anything else.
function fail(kind, message, code = 1) {
  process.stderr.write(`${kind}: ${message}\n`);
  process.exit(code);
}

// ---------------------------------------------------------------------------
// Flags, parsed the way the Rust servers' clap parsers accept them
// (`--flag value` or `--flag=value`, each at most once), with one-line
// errors that name the flag.

class FlagError extends Error {}

function unsigned(raw) {
  // Rust's `u64::from_str`: digits, an optional leading `+`.
  if (!/^\+?[0-9]+$/.test(raw)) return null;
  const value = BigInt(raw);
  return value <= U64_MAX ? value : null;
}

// A parser for an integer flag in min..=max (BigInts).
function integer(min, max) {
  return (raw) => {
    const value = unsigned(raw);
    if (value === null) throw new FlagError('invalid digit found in string');
    if (value < min || value > max) throw new FlagError(`${raw} is not in ${min}..=${max}`);
    return Number(value);
  };
}

// `IP:PORT` or `[IPv6]:PORT`, as Rust's `SocketAddr` parses it.
function parseAddr(raw) {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(raw);
  const host = match && (match[1] ?? match[2]);
  const family = host ? net.isIP(host) : 0;
  const port = match ? Number(match[3]) : NaN;
  if (!match || family !== (match[1] ? 6 : 4) || port > 65535) {
    throw new FlagError('invalid socket address syntax');
  }
  return { host, port, family };
}

function formatAddr(host, port) {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

function availableParallelism() {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

// The contract's flags, every kind's. `key` is the property of the parsed
// args; a flag without `value` is a switch.
const COMMON_FLAGS = [
  {
    name: '--listen', key: 'listen', value: 'ADDR', parse: parseAddr, default: '127.0.0.1:8080',
    help: 'Address to bind; port 0 picks a free port',
  },
  {
    name: '--workers', key: 'workers', value: 'N', parse: integer(1n, 1024n), default: null,
    help: 'Workers, 1..=1024 [default: available parallelism]',
  },
  {
    name: '--allow-crash', key: 'allowCrash',
    help: 'Enable POST /crash?how=panic|abort|exit|segv|hang (otherwise it answers 403)',
  },
  {
    name: '--grace-ms', key: 'graceMs', value: 'MS', parse: integer(0n, U64_MAX), default: '10000',
    help: 'How long a graceful shutdown waits for in-flight requests',
  },
  {
    name: '--dataset-mb', key: 'datasetMb', value: 'MB', parse: integer(0n, U64_MAX), default: '0',
    help: 'Size of the read-only in-memory dataset served by /data (0: none)',
  },
  {
    name: '--header-timeout-ms', key: 'headerTimeoutMs', value: 'MS', parse: integer(1n, U64_MAX),
    default: '10000',
    help: 'Close a connection whose request headers take longer than this to arrive, '
      + 'or that sits idle between requests this long',
  },
];

// Parses `argv` against the contract's flags and the kind's own. Bad flags
// exit 2 with one line naming the flag; `--help` prints the flags.
// `defaults` overrides common flags' defaults by key.
function parseFlags(kind, about, argv, kindFlags = [], defaults = {}) {
  const flags = [
    ...COMMON_FLAGS.map((flag) => (flag.key in defaults ? { ...flag, default: defaults[flag.key] } : flag)),
    ...kindFlags,
  ];
  const usage = (flag) => (flag.value ? `'${flag.name} <${flag.value}>'` : `'${flag.name}'`);
  const seen = new Set();
  const args = {};
  try {
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i];
      if (arg === '--help' || arg === '-h') {
        process.stdout.write(help(kind, about, flags));
        process.exit(0);
      }
      if (arg === '--version' || arg === '-V') {
        process.stdout.write(`${kind} ${process.env.NODE_PEERS_VERSION || '(unknown)'} (node ${process.version})\n`);
        process.exit(0);
      }
      const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
      const name = eq > 0 ? arg.slice(0, eq) : arg;
      const flag = flags.find((f) => f.name === name);
      if (!flag) throw new FlagError(`unexpected argument '${arg}' found`);
      if (seen.has(flag.name)) {
        throw new FlagError(`the argument ${usage(flag)} cannot be used multiple times`);
      }
      seen.add(flag.name);
      if (!flag.value) {
        if (eq > 0) {
          throw new FlagError(`unexpected value '${arg.slice(eq + 1)}' for '${flag.name}' found; no more were expected`);
        }
        args[flag.key] = true;
        continue;
      }
      let raw;
      if (eq > 0) raw = arg.slice(eq + 1);
      else if (i + 1 < argv.length) raw = argv[++i];
      else throw new FlagError(`a value is required for ${usage(flag)} but none was supplied`);
      try {
        args[flag.key] = flag.parse(raw);
      } catch (error) {
        if (!(error instanceof FlagError)) throw error;
        throw new FlagError(`invalid value '${raw}' for ${usage(flag)}: ${error.message}`);
      }
    }
    for (const flag of flags) {
      if (flag.key in args) continue;
      if (!flag.value) args[flag.key] = false;
      else args[flag.key] = flag.default === null ? null : flag.parse(flag.default);
    }
  } catch (error) {
    if (!(error instanceof FlagError)) throw error;
    fail(kind, error.message, 2);
  }
  if (args.workers === null) args.workers = availableParallelism();
  return args;
}

function help(kind, about, flags) {
  const lines = flags.map((flag) => {
    const name = flag.value ? `${flag.name} <${flag.value}>` : flag.name;
    const fallback = flag.value && flag.default !== null ? ` [default: ${flag.default}]` : '';
    return `  ${name.padEnd(26)} ${flag.help}${fallback}`;
  });
  return `${about}\n\nUsage: ${kind} [OPTIONS]\n\nOptions:\n${lines.join('\n')}\n`
    + `  -h, --help${' '.repeat(17)}Print help\n  -V, --version${' '.repeat(14)}Print version (and node's)\n`;
}

function clampTimer(ms) {
  return Math.min(ms, MAX_TIMER_MS);
}

// ---------------------------------------------------------------------------
// The ready line and listening.

// The one line on stdout, once every worker accepts requests.
function announceReady(kind, address, workers) {
  const ready = {
    event: 'ready',
    model: kind,
    addr: formatAddr(address.address, address.port),
    pid: process.pid,
    workers,
  };
  // A pipe: Node writes it synchronously on Linux, before anything else.
  process.stdout.write(`${JSON.stringify(ready)}\n`);
}

// Listens on `args.listen` outside a cluster; a failure exits 1 with the
// cause, as the Rust servers' "cannot listen on ADDR: cause".
function listen(kind, server, addr, log, onListening) {
  const text = formatAddr(addr.host, addr.port);
  const failed = (error) => fail(kind, `cannot listen on ${text}: ${error.message}`);
  server.once('error', failed);
  server.listen({ host: addr.host, port: addr.port, backlog: BACKLOG }, () => {
    server.off('error', failed);
    onServerErrors(server, log);
    onListening(server.address());
  });
}

// Logs a listening server's later errors; Node goes on accepting after
// each. Running out of descriptors is one episode, as in the Rust servers'
// `service::accept`: a warning when the first accept fails with EMFILE or
// ENFILE, one line with how long it lasted and how many failed when a
// connection comes again, nothing in between. Node rarely reports it at
// all: libuv answers EMFILE by itself, closing a reserved descriptor to
// accept and close the waiting connections, and backs off by waiting for
// the next one (CONTRACT.md, "The Node kinds"); this is for when it does.
function onServerErrors(server, log) {
  let episode = null;
  server.on('error', (error) => {
    if (error.code !== 'EMFILE' && error.code !== 'ENFILE') {
      log.warn(`server error: ${error.message}`);
      return;
    }
    if (episode === null) {
      episode = { since: Date.now(), failures: 0 };
      log.warn(`accept: out of descriptors; serving the connections held: ${error.message}`);
    }
    episode.failures++;
  });
  server.on('connection', () => {
    if (episode === null) return;
    const lasted = Date.now() - episode.since;
    log.info(`accept: descriptors available again; accepting lasted_ms=${lasted} failed_attempts=${episode.failures}`);
    episode = null;
  });
}

// Calls `stop` once on SIGTERM or SIGINT (a terminal's Ctrl-C reaches a
// whole process group at once).
function onStopSignals(stop) {
  let stopping = false;
  const once = (signal) => {
    if (stopping) return;
    stopping = true;
    stop(signal);
  };
  process.on('SIGTERM', once);
  process.on('SIGINT', once);
}

// The `--dataset-mb` dataset, or null for 0; a failure (no memory) exits 1.
function buildDataset(kind, mb, shared) {
  if (mb === 0) return null;
  try {
    return dataset.generate(mb, shared);
  } catch (error) {
    return fail(kind, `cannot build the ${mb} MiB dataset: ${error.message}`);
  }
}

// ---------------------------------------------------------------------------
// Counters and loop lag.

function counters() {
  return { requests: 0, in_flight: 0, errors: 0 };
}

// A reader of this thread's event-loop lag, in the contract's shape
// (milliseconds). Node's histogram records the time between ticks of a
// 10 ms timer; the contract's lag is how late the tick came, so the 10 ms
// are taken off. Cumulative since start, like the Rust ticker.
function loopLag() {
  const histogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  histogram.enable();
  const ms = (ns) => Math.max(0, Math.round((ns / 1e6 - LAG_RESOLUTION_MS) * 1000) / 1000);
  return () => {
    if (histogram.count === 0) return { p50: 0, p99: 0, max: 0 };
    return {
      p50: ms(histogram.percentile(50)),
      p99: ms(histogram.percentile(99)),
      max: ms(histogram.max),
    };
  };
}

function uptimeMs() {
  return Math.floor(performance.now());
}

// ---------------------------------------------------------------------------
// The HTTP server.
//
// `ctx` is what a kind plugs in:
//   kind, log          names and stderr logging
//   loopWorker         `x-worker` for work this event loop does itself
//   counters           this loop's { requests, in_flight, errors }
//   dataset            the /data bytes, or null
//   allowCrash         --allow-crash
//   headerTimeoutMs    --header-timeout-ms
//   execute(job, done) runs { kind: 'cpu', iters, first, count } (parts
//                      first..first+count of a request) or { kind: 'crash', how }
//                      and calls done({ status, body, worker, headers })
//   stats(done)        calls done(document) or done(null, why)
//
// Connection limits, set to the contract's where Node has the knob:
// - headersTimeout: a request head must arrive within --header-timeout-ms
//   (Node answers 408 and closes; checked every connectionsCheckingInterval,
//   so within a tenth of the timeout, at most a second late);
// - keepAliveTimeout: an idle keep-alive connection closes after the same;
// - requestTimeout 0: no limit on a whole request, as in the Rust servers;
// - maxHeaderSize: MAX_HEAD_BYTES (431 over it); maxHeadersCount: 64;
// - requireHostHeader off: the Rust servers answer a request without Host.
function createServer(ctx) {
  const timeout = clampTimer(ctx.headerTimeoutMs);
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEAD_BYTES,
      requireHostHeader: false,
      headersTimeout: timeout,
      requestTimeout: 0,
      keepAliveTimeout: timeout,
      connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.floor(timeout / 10))),
      noDelay: true,
    },
    (req, res) => onRequest(ctx, req, res),
  );
  server.keepAliveTimeout = timeout;
  server.maxHeadersCount = MAX_HEADERS;
  ctx.stopping = false;
  ctx.sockets = new Set();
  server.on('connection', (socket) => {
    socket[ACTIVE] = 0;
    ctx.sockets.add(socket);
    socket.once('close', () => {
      ctx.sockets.delete(socket);
      if (ctx.stopping) checkDrained(ctx);
    });
  });
  return server;
}

function onRequest(ctx, req, res) {
  ctx.counters.requests++;
  ctx.counters.in_flight++;
  const socket = req.socket;
  socket[ACTIVE]++;
  res.once('close', () => {
    socket[ACTIVE]--;
    // Shutting down: a keep-alive connection whose last request is done
    // has nothing more to wait for.
    if (ctx.stopping && socket[ACTIVE] === 0) socket.destroy();
  });
  const length = req.headers['content-length'];
  // A request with neither header has no body: the common case costs
  // nothing more.
  if (length === undefined && req.headers['transfer-encoding'] === undefined) {
    route(ctx, req, res);
    return;
  }
  readBody(ctx, req, res, length);
}

// Reads and discards the body, refusing more than 64 KiB with 413 (and the
// connection closed: the rest of the body is never read).
function readBody(ctx, req, res, length) {
  const declared = length === undefined ? null : unsigned(length);
  if (declared !== null && declared > BigInt(MAX_BODY)) {
    tooLarge(ctx, res);
    return;
  }
  let size = 0;
  let done = false;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY && !done) {
      done = true;
      tooLarge(ctx, res);
    }
  });
  req.on('end', () => {
    if (done) return;
    done = true;
    route(ctx, req, res);
  });
  req.on('error', () => {
    if (done) return;
    done = true;
    reply(ctx, res, 400, 'could not read the request body\n', ctx.loopWorker, { connection: 'close' });
  });
}

function tooLarge(ctx, res) {
  reply(ctx, res, 413, 'request body over 64 KiB\n', ctx.loopWorker, { connection: 'close' });
}

// Answers once: `x-worker`, content type and length, the counters.
function reply(ctx, res, status, body, worker, extra, type = TEXT) {
  if (res[REPLIED]) return;
  res[REPLIED] = true;
  const headers = {
    'content-type': type,
    'x-worker': worker,
    'content-length': Buffer.byteLength(body),
  };
  if (extra) Object.assign(headers, extra);
  if (ctx.stopping) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(body);
  ctx.counters.in_flight--;
  // A failure a job had elsewhere was counted by whoever ran it.
  if (status >= 500 && worker === ctx.loopWorker) ctx.counters.errors++;
}

// `/stats`'s `processes`: each live process of the server as /proc shows
// it, read by the process that answers, as the Rust servers do
// (crates/service/src/procself.rs). Node has no sysconf: /proc/PID/stat
// counts CPU time in USER_HZ ticks, which Linux fixes at 100 per second on
// the architectures Node runs on.
const USER_HZ = 100;

function processes(document) {
  const pids = [document.pid];
  for (const w of document.workers) {
    if (w.pid && w.state !== 'dead' && !pids.includes(w.pid)) pids.push(w.pid);
  }
  return pids.map(readProcess).filter((p) => p !== null);
}

function readProcess(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name, in parentheses, may hold spaces: count fields after
    // its closing parenthesis. utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const result = {
      pid,
      cpu_user_s: Number(fields[11]) / USER_HZ,
      cpu_system_s: Number(fields[12]) / USER_HZ,
      pss_bytes: null,
      rss_bytes: null,
    };
    try {
      const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1');
      const kib = (name) => {
        const match = rollup.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'));
        return match ? Number(match[1]) * 1024 : null;
      };
      result.pss_bytes = kib('Pss');
      result.rss_bytes = kib('Rss');
    } catch {
      // No smaps_rollup (an old kernel): memory stays null.
    }
    return result;
  } catch {
    return null; // gone, or not ours to read
  }
}

function letter(chunk) {
  return 97 + (chunk % 26); // 'a'
}

// `/buffer`: the whole body in memory before a byte is sent.
function buffer(mb) {
  const body = Buffer.alloc(mb * MIB);
  for (let chunk = 0; chunk < (mb * MIB) / CHUNK; chunk++) {
    body.fill(letter(chunk), chunk * CHUNK, (chunk + 1) * CHUNK);
  }
  return body;
}

// `/stream`: a Readable whose read() makes the next chunk only when the
// stream asks for it, piped into the response with pipeline(), which stops
// reading while res.write() returns false: a slow client holds about one
// chunk plus the socket's buffers.
function stream(ctx, res, mb, worker) {
  res[REPLIED] = true;
  const count = (mb * MIB) / CHUNK;
  let next = 0;
  const chunks = new Readable({
    highWaterMark: CHUNK,
    read() {
      this.push(next < count ? Buffer.alloc(CHUNK, letter(next++)) : null);
    },
  });
  const headers = { 'content-type': OCTETS, 'x-worker': worker, 'content-length': mb * MIB };
  if (ctx.stopping) headers.connection = 'close';
  res.writeHead(200, headers);
  pipeline(chunks, res, () => {
    ctx.counters.in_flight--;
  });
}

// The request target's path and query. An absolute-form target
// (`http://host/path?q`) has its scheme and authority taken off, as hyper's
// `Uri::path` does.
function splitTarget(url) {
  let target = url;
  if (target[0] !== '/') {
    const authority = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/.exec(target);
    if (authority) {
      target = target.slice(authority[0].length);
      if (target[0] !== '/') target = `/${target}`;
    }
  }
  const q = target.indexOf('?');
  return q < 0 ? [target, null] : [target.slice(0, q), target.slice(q + 1)];
}

// The first value of query parameter `name`, or null. No decoding, as in
// the Rust servers.
function param(query, name) {
  if (query === null) return null;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (key === name) return eq < 0 ? '' : pair.slice(eq + 1);
  }
  return null;
}

// An integer parameter in range.min..=range.max (BigInts), range.default
// when absent (required without one). Returns the BigInt, or the one-line
// message of the 400.
function numberParam(query, name, range) {
  const raw = param(query, name);
  let problem;
  if (raw === null) {
    if (range.default !== undefined) return { value: range.default };
    problem = 'is missing';
  } else {
    const value = unsigned(raw);
    if (value === null) problem = 'is not a number';
    else if (value < range.min || value > range.max) problem = 'is out of range';
    else return { value };
  }
  return { error: `parameter \`${name}\` ${problem}: expected an integer in ${range.min}..=${range.max}\n` };
}

const METHODS = {
  '/': 'GET',
  '/health': 'GET',
  '/cpu': 'GET',
  '/io': 'GET',
  '/data': 'GET',
  '/stats': 'GET',
  '/stream': 'GET',
  '/buffer': 'GET',
  '/crash': 'POST',
};

function route(ctx, req, res) {
  const [path, query] = splitTarget(req.url);
  const method = Object.prototype.hasOwnProperty.call(METHODS, path) ? METHODS[path] : undefined;
  const main = ctx.loopWorker;
  if (method === undefined) {
    reply(ctx, res, 404, 'not found\n', main);
    return;
  }
  if (req.method !== method) {
    reply(ctx, res, 405, `${path} only accepts ${method}\n`, main, { allow: method });
    return;
  }
  const done = (result) => reply(ctx, res, result.status, result.body, result.worker, result.headers);
  switch (path) {
    case '/':
    case '/health':
      reply(ctx, res, 200, 'ok\n', main);
      return;
    case '/cpu': {
      const iters = numberParam(query, 'iters', ITERS);
      const parts = numberParam(query, 'parts', PARTS);
      const bad = iters.error || parts.error;
      if (bad) reply(ctx, res, 400, bad, main);
      else if (iters.value * parts.value > ITERS.max) {
        reply(ctx, res, 400, `parameters \`iters\` × \`parts\` must be at most ${ITERS.max}: `
          + `${iters.value} × ${parts.value} is over\n`, main);
      } else {
        ctx.execute({ kind: 'cpu', iters: Number(iters.value), first: 0, count: Number(parts.value) }, done);
      }
      return;
    }
    case '/io': {
      const ms = numberParam(query, 'ms', IO_MS);
      if (ms.error) reply(ctx, res, 400, ms.error, main);
      else setTimeout(() => reply(ctx, res, 200, 'io\n', main), Number(ms.value));
      return;
    }
    case '/data': {
      if (dataset.windows(ctx.dataset) === 0) {
        reply(ctx, res, 404, 'no dataset: start the server with --dataset-mb\n', main);
        return;
      }
      const key = numberParam(query, 'key', { min: 0n, max: U64_MAX });
      if (key.error) reply(ctx, res, 400, key.error, main);
      else reply(ctx, res, 200, `${dataset.checksum(ctx.dataset, key.value)}\n`, main);
      return;
    }
    case '/stream':
    case '/buffer': {
      const mb = numberParam(query, 'mb', MB);
      if (mb.error) reply(ctx, res, 400, mb.error, main);
      else if (path === '/buffer') reply(ctx, res, 200, buffer(Number(mb.value)), main, null, OCTETS);
      else stream(ctx, res, Number(mb.value), main);
      return;
    }
    case '/stats':
      ctx.stats((document, why) => {
        if (document) document.processes = processes(document);
        if (document) reply(ctx, res, 200, `${JSON.stringify(document)}\n`, main, null, JSON_TYPE);
        else reply(ctx, res, 500, `${why}\n`, main);
      });
      return;
    case '/crash': {
      if (!ctx.allowCrash) {
        reply(ctx, res, 403, '/crash is disabled: start the server with --allow-crash\n', main);
        return;
      }
      const how = param(query, 'how');
      if (!CRASH_MODES.includes(how)) {
        reply(ctx, res, 400, `parameter \`how\` must be one of ${CRASH_MODES.join('|')}\n`, main);
        return;
      }
      ctx.execute({ kind: 'crash', how }, done);
      return;
    }
    default:
      throw new Error(`unrouted path ${path}`);
  }
}

// `execute` for a kind whose jobs run on the event loop itself (a cluster
// worker, node-single): `/cpu` blocks the loop, its parts one after
// another, and a crash ends the process.
function executeInline(ctx) {
  return (job, done) => {
    if (job.kind === 'cpu') {
      done({ status: 200, body: cpu(job.iters, job.first, job.count), worker: ctx.loopWorker });
      return;
    }
    crash(job.how, false, (message) => ctx.log.warn(message));
  };
}

// ---------------------------------------------------------------------------
// Graceful shutdown: stop accepting, close idle connections (keep-alive
// ones between requests, and ones that never sent a whole request), let
// requests in progress finish within `graceMs`, then call `done(drained)`.
// Answers given meanwhile carry `connection: close`.
function stopServer(ctx, server, graceMs, done) {
  if (ctx.stopping) return;
  ctx.stopping = true;
  server.close();
  for (const socket of ctx.sockets) {
    if (socket[ACTIVE] === 0) socket.destroy();
  }
  const busy = [...ctx.sockets].filter((socket) => socket[ACTIVE] > 0).length;
  ctx.log.info(`stopping: no longer accepting; ${busy} connection(s) with requests in progress`);
  ctx.drained = (all) => {
    clearTimeout(ctx.graceTimer);
    ctx.drained = null;
    done(all);
  };
  ctx.graceTimer = setTimeout(() => {
    ctx.log.warn(`grace period of ${graceMs} ms over; closing ${ctx.sockets.size} connection(s)`);
    for (const socket of ctx.sockets) socket.destroy();
    if (ctx.drained) ctx.drained(false);
  }, clampTimer(graceMs));
  checkDrained(ctx);
}

function checkDrained(ctx) {
  if (ctx.drained && ctx.sockets.size === 0) ctx.drained(true);
}

module.exports = {
  BACKLOG,
  MAX_BODY,
  MAX_HEADERS,
  MAX_HEAD_BYTES,
  FlagError,
  announceReady,
  buildDataset,
  clampTimer,
  counters,
  createServer,
  executeInline,
  fail,
  formatAddr,
  integer,
  listen,
  logger,
  loopLag,
  onServerErrors,
  onStopSignals,
  parseFlags,
  stopServer,
  uptimeMs,
};
