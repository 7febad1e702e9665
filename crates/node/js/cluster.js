'use strict';
// node-cluster: Node's cluster module, one worker process per slot, the way
// Node spreads a server over cores.
//
// The primary forks the workers (cluster.fork(): fork and exec of a fresh
// Node process running this script again, so nothing is shared
// copy-on-write: each worker builds its own dataset) and never serves HTTP.
// `--balance rr` (Node's default, SCHED_RR): the primary accepts every
// connection and hands it to the workers in turn over IPC. `--balance none`
// (SCHED_NONE, prefork's `shared`): the primary binds the socket and sends it
// to the workers, which all accept on it.
//
// Supervision, done the way a Node application has to, over IPC:
// - a worker that exits is replaced in its slot (at once; a slot whose
//   workers keep dying quickly waits 100 ms, doubling up to 10 s, as
//   prefork's backoff);
// - every worker sends a heartbeat; one that misses --worker-timeout-ms
//   (its event loop is stuck) is killed with SIGKILL, then replaced;
// - `/stats`, answered by whichever worker gets it: that worker asks the
//   primary, which asks every worker for its counters and answers with the
//   whole document. The primary keeps what survives a worker: its pid,
//   state, restarts, and the counts of the slot's earlier workers.

const cluster = require('node:cluster');
const net = require('node:net');

const contract = require('./contract');

const ABOUT = 'The lab\'s Node cluster server: a primary forks worker processes with cluster.fork().';

// How often a worker beats, and the primary checks the beats, at most.
const BEAT_MS = 100;
// How long the primary waits for the workers' counters for `/stats` before
// answering with the last ones each sent.
const GATHER_MS = 250;
// After the grace period, how long the primary waits before it kills the
// workers still running.
const STOP_SLACK_MS = 500;
// Respawn backoff, as prefork's (crates/prefork/src/backoff.rs).
const BACKOFF_START_MS = 100;
const BACKOFF_MAX_MS = 10000;
const STABLE_LIFE_MS = 30000;

const BALANCES = {
  rr: { policy: 'SCHED_RR', name: 'rr' },
  none: { policy: 'SCHED_NONE', name: 'shared' },
  shared: { policy: 'SCHED_NONE', name: 'shared' },
};

function balanceFlag(kind) {
  return (raw) => {
    if (raw === 'reuseport') {
      // Not an ordinary bad value: say why, and exit 2 as for any bad flag.
      contract.fail(
        kind,
        `--balance reuseport is not available: Node ${process.version} has no SO_REUSEPORT `
          + '(net has no reusePort option), so cluster workers cannot each bind their own socket; '
          + 'use rr (the default: the primary hands out connections) or none (the workers share one socket)',
        2,
      );
    }
    if (!Object.prototype.hasOwnProperty.call(BALANCES, raw)) {
      throw new contract.FlagError('possible values: rr, none, shared');
    }
    return BALANCES[raw];
  };
}

function datasetLoadFlag(kind) {
  return (raw) => {
    if (raw === 'before-fork') {
      contract.fail(
        kind,
        '--dataset-load before-fork is not possible: cluster.fork() starts a fresh Node process '
          + '(fork and exec), so nothing the primary builds is shared; each worker builds its own '
          + '(per-worker, the default)',
        2,
      );
    }
    if (raw !== 'per-worker') throw new contract.FlagError('possible values: per-worker');
    return raw;
  };
}

function flags(kind) {
  return [
    {
      name: '--balance', key: 'balance', value: 'POLICY', parse: balanceFlag(kind), default: 'rr',
      help: 'rr: the primary accepts and hands each connection to the next worker (SCHED_RR). '
        + 'none (or shared): the workers accept on one shared socket (SCHED_NONE)',
    },
    {
      name: '--worker-timeout-ms', key: 'workerTimeoutMs', value: 'MS',
      parse: contract.integer(0n, 2n ** 64n - 1n), default: '10000',
      help: 'Kill and replace a worker whose heartbeat is this late (0: never)',
    },
    {
      name: '--dataset-load', key: 'datasetLoad', value: 'WHERE', parse: datasetLoadFlag(kind),
      default: 'per-worker',
      help: 'Where the dataset is built: per-worker, the only place a cluster worker can have it',
    },
  ];
}

function main(kind, argv) {
  const args = contract.parseFlags(kind, ABOUT, argv, flags(kind));
  if (cluster.isPrimary) primary(kind, args);
  else worker(kind, args);
}

// ---------------------------------------------------------------------------
// The primary.

function primary(kind, args) {
  const log = contract.logger(`${kind} primary`);
  // Must be set before the first fork.
  cluster.schedulingPolicy = cluster[args.balance.policy];
  // Workers' stdout goes to stderr: stdout is the ready line's alone.
  cluster.setupPrimary({ stdio: ['ignore', 2, 2, 'ipc'] });

  const slots = Array.from({ length: args.workers }, (_, id) => ({
    id,
    worker: null,
    pid: 0,
    state: 'starting',
    restarts: 0,
    // The counts of the slot's earlier workers, and the last ones its
    // current worker reported.
    base: { requests: 0, errors: 0, connections: 0 },
    last: { requests: 0, in_flight: 0, errors: 0, connections: 0, lag: null },
    lastBeat: 0,
    forkedAt: 0,
    quickDeaths: 0,
    respawn: null,
    killedAsHung: false,
    listenError: null,
  }));
  const bySlot = new Map(); // cluster worker id -> slot
  const gatherings = new Map();
  let gatherSeq = 0;
  let address = null;
  let announced = false;
  let stopping = false;

  const addrText = contract.formatAddr(args.listen.host, args.listen.port);

  // Find the port first (port 0 asks the kernel for one) and check the
  // address is free, so that a taken port is one clear error and every
  // worker, replacements included, listens on the same port: cluster
  // closes its socket when the last worker on it is gone, and a later
  // listen on port 0 would get a new port.
  const probe = net.createServer();
  probe.once('error', (error) => contract.fail(kind, `cannot listen on ${addrText}: ${error.message}`));
  probe.listen({ host: args.listen.host, port: args.listen.port, exclusive: true }, () => {
    const { port } = probe.address();
    probe.close(() => {
      address = { address: args.listen.host, port };
      for (const slot of slots) fork(slot);
    });
  });

  function fork(slot) {
    slot.respawn = null;
    const child = cluster.fork({
      NODE_PEER_SLOT: String(slot.id),
      NODE_PEER_PORT: String(address.port),
    });
    bySlot.set(child.id, slot);
    Object.assign(slot, {
      worker: child,
      pid: child.process.pid,
      state: 'starting',
      last: { requests: 0, in_flight: 0, errors: 0, connections: 0, lag: null },
      lastBeat: Date.now(),
      forkedAt: Date.now(),
      killedAsHung: false,
      listenError: null,
    });
    child.on('message', (message) => onMessage(slot, child, message));
    // A send to a worker that just died fails; its exit is handled below.
    child.on('error', (error) => log.warn(`worker ${slot.id}: ${error.message}`));
    log.info(`worker ${slot.id} (pid ${slot.pid}) started`);
  }

  cluster.on('listening', (child) => {
    const slot = bySlot.get(child.id);
    if (!slot || slot.worker !== child) return;
    slot.state = 'ready';
    slot.lastBeat = Date.now();
    if (!announced && slots.every((s) => s.state === 'ready')) {
      announced = true;
      contract.announceReady(kind, address, slots.length);
      log.info(`ready on ${contract.formatAddr(address.address, address.port)} with ${slots.length} workers, balance ${args.balance.name}`);
    }
  });

  cluster.on('exit', (child, code, signal) => {
    const slot = bySlot.get(child.id);
    bySlot.delete(child.id);
    if (!slot || slot.worker !== child) return;
    const how = signal ? `killed by ${signal}` : `exited with status ${code}`;
    // Its counts stay with the slot; what it did since its last report is
    // lost with it.
    slot.base.requests += slot.last.requests;
    slot.base.errors += slot.last.errors;
    slot.base.connections += slot.last.connections || 0;
    slot.last = { requests: 0, in_flight: 0, errors: 0, connections: 0, lag: slot.last.lag };
    slot.worker = null;
    slot.state = 'dead';
    for (const gathering of [...gatherings.values()]) {
      gathering.waiting.delete(slot.id);
      if (gathering.waiting.size === 0) gathering.finish();
    }
    if (stopping) {
      log.info(`worker ${slot.id} (pid ${slot.pid}) stopped: ${how}`);
      if (slots.every((s) => s.worker === null)) process.exit(0);
      return;
    }
    if (!announced && slot.listenError) {
      for (const s of slots) if (s.worker) s.worker.process.kill('SIGKILL');
      contract.fail(kind, `cannot listen on ${addrText}: ${slot.listenError}`);
    }
    const lived = Date.now() - slot.forkedAt;
    const delay = backoff(slot, lived);
    log.warn(`worker ${slot.id} (pid ${slot.pid}) ${how} after ${lived} ms; replacing it ${delay ? `in ${delay} ms` : 'at once'}`);
    slot.respawn = setTimeout(() => {
      slot.restarts++;
      fork(slot);
    }, delay);
  });

  function onMessage(slot, child, message) {
    if (slot.worker !== child || message === null || typeof message !== 'object') return;
    slot.lastBeat = Date.now();
    switch (message.t) {
      case 'beat':
        slot.last = message.c;
        break;
      case 'counters': {
        slot.last = message.c;
        const gathering = gatherings.get(message.id);
        if (gathering) {
          gathering.waiting.delete(slot.id);
          if (gathering.waiting.size === 0) gathering.finish();
        }
        break;
      }
      case 'stats?':
        gather(child, message.id);
        break;
      case 'listen-error':
        slot.listenError = message.message;
        break;
      default:
        break;
    }
  }

  // Asks every live worker for its counters and answers `asker` with the
  // whole document once all have answered, or after GATHER_MS with the
  // last counters the silent ones sent (a hung or busy worker answers
  // nothing).
  function gather(asker, requestId) {
    const id = ++gatherSeq;
    const waiting = new Set();
    for (const slot of slots) {
      if (slot.worker && slot.worker.isConnected()) {
        waiting.add(slot.id);
        slot.worker.send({ t: 'counters?', id }, () => {});
      }
    }
    const gathering = {
      waiting,
      finish: () => {
        clearTimeout(gathering.timer);
        gatherings.delete(id);
        if (asker.isConnected()) asker.send({ t: 'stats', id: requestId, doc: document() }, () => {});
      },
    };
    gathering.timer = setTimeout(gathering.finish, GATHER_MS);
    gatherings.set(id, gathering);
    if (waiting.size === 0) gathering.finish();
  }

  function document() {
    return {
      model: kind,
      pid: process.pid,
      uptime_ms: contract.uptimeMs(),
      workers: slots.map((slot) => {
        const entry = {
          id: slot.id,
          pid: slot.pid,
          state: slot.state,
          requests: slot.base.requests + slot.last.requests,
          in_flight: slot.worker ? slot.last.in_flight : 0,
          errors: slot.base.errors + slot.last.errors,
          restarts: slot.restarts,
          connections: slot.base.connections + (slot.last.connections || 0),
        };
        if (slot.last.lag) entry.loop_lag_ms = slot.last.lag;
        return entry;
      }),
      balance: args.balance.name,
    };
  }

  // A worker whose heartbeat is late by more than --worker-timeout-ms has
  // an event loop that does not run: kill it; its exit replaces it. Only
  // serving workers are checked: building a large dataset at boot holds a
  // worker's loop for a while, legitimately.
  if (args.workerTimeoutMs > 0) {
    const every = Math.max(10, Math.min(BEAT_MS, Math.floor(args.workerTimeoutMs / 4)));
    setInterval(() => {
      const now = Date.now();
      for (const slot of slots) {
        if (!slot.worker || slot.state !== 'ready' || slot.killedAsHung) continue;
        const age = now - slot.lastBeat;
        if (age > args.workerTimeoutMs) {
          log.warn(`worker ${slot.id} (pid ${slot.pid}) hung: no heartbeat for ${age} ms; killing it`);
          slot.killedAsHung = true;
          slot.worker.process.kill('SIGKILL');
        }
      }
    }, every).unref();
  }

  // SIGTERM or SIGINT: no more respawns, the workers drain (they get
  // SIGTERM), and the ones still running after the grace period are killed.
  contract.onStopSignals((signal) => {
    stopping = true;
    log.info(`${signal}: stopping the workers`);
    for (const slot of slots) {
      clearTimeout(slot.respawn);
      if (slot.worker) slot.worker.process.kill('SIGTERM');
    }
    if (slots.every((s) => s.worker === null)) process.exit(0);
    setTimeout(() => {
      for (const slot of slots) {
        if (slot.worker) {
          log.warn(`worker ${slot.id} (pid ${slot.pid}) still running after the grace period; killing it`);
          slot.worker.process.kill('SIGKILL');
        }
      }
    }, contract.clampTimer(args.graceMs + STOP_SLACK_MS));
  });
}

function backoff(slot, lived) {
  if (lived >= STABLE_LIFE_MS) slot.quickDeaths = 0;
  const n = slot.quickDeaths;
  slot.quickDeaths++;
  if (n === 0) return 0;
  return Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** Math.min(n - 1, 16));
}

// ---------------------------------------------------------------------------
// A worker.

function worker(kind, args) {
  const slot = Number(process.env.NODE_PEER_SLOT);
  const port = Number(process.env.NODE_PEER_PORT);
  const log = contract.logger(`${kind} worker ${slot}`);
  const lag = contract.loopLag();
  const ctx = {
    kind,
    log,
    loopWorker: String(slot),
    counters: contract.counters(),
    dataset: contract.buildDataset(kind, args.datasetMb, false),
    allowCrash: args.allowCrash,
    headerTimeoutMs: args.headerTimeoutMs,
  };
  ctx.execute = contract.executeInline(ctx);

  // Sends to the primary unless the channel is gone (the primary died: the
  // cluster module ends this worker as soon as its loop notices).
  const send = (message) => {
    if (process.connected) process.send(message, () => {});
  };
  const snapshot = () => ({ ...ctx.counters, lag: lag() });

  const pendingStats = new Map();
  let statsSeq = 0;
  ctx.stats = (done) => {
    if (!process.connected) {
      done(null, 'the cluster primary is gone');
      return;
    }
    const id = ++statsSeq;
    pendingStats.set(id, done);
    send({ t: 'stats?', id });
  };

  process.on('message', (message) => {
    if (message === null || typeof message !== 'object') return;
    if (message.t === 'counters?') {
      send({ t: 'counters', id: message.id, c: snapshot() });
    } else if (message.t === 'stats') {
      const done = pendingStats.get(message.id);
      pendingStats.delete(message.id);
      if (done) done(message.doc);
    }
  });

  const server = contract.createServer(ctx);
  // The connections this worker took (handed over by the primary under rr,
  // accepted on the shared socket under none), for `/stats`.
  ctx.counters.connections = 0;
  server.on('connection', () => { ctx.counters.connections++; });
  const cannotListen = (error) => {
    // Before listening: tell the primary why, then go.
    log.warn(`cannot listen: ${error.message}`);
    if (process.connected) process.send({ t: 'listen-error', message: error.message }, () => process.exit(1));
    else process.exit(1);
  };
  server.once('error', cannotListen);
  server.listen({ host: args.listen.host, port, backlog: contract.BACKLOG }, () => {
    server.off('error', cannotListen);
    contract.onServerErrors(server, log);
    const every = Math.max(10, Math.min(BEAT_MS, Math.floor((args.workerTimeoutMs || BEAT_MS * 4) / 4)));
    setInterval(() => send({ t: 'beat', c: snapshot() }), every);
  });

  // The primary forwards SIGTERM; a terminal's Ctrl-C sends SIGINT to the
  // whole group. Either way: drain, then exit 0.
  contract.onStopSignals((signal) => {
    log.info(`${signal}: draining`);
    contract.stopServer(ctx, server, args.graceMs, () => process.exit(0));
  });
}

module.exports = { main };
