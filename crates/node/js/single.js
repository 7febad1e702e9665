'use strict';
// node-single: one Node process, no workers, the way Node is usually run.
// Everything happens on its one event loop: HTTP, `/io` timers, and `/cpu`,
// which blocks the loop while it runs. `x-worker` is always `main`; `/stats`
// has one worker entry (id 0), the process itself. A crash ends the server:
// nothing supervises it.

const contract = require('./contract');

const ABOUT = 'The lab\'s single-process Node server: one event loop does everything.';

function main(kind, argv) {
  const args = contract.parseFlags(kind, ABOUT, argv, [], { workers: '1' });
  if (args.workers !== 1) {
    contract.fail(
      kind,
      `invalid value '${args.workers}' for '--workers <N>': node-single is one process with no workers; only 1`,
      2,
    );
  }
  const log = contract.logger(kind);
  const lag = contract.loopLag();
  const ctx = {
    kind,
    log,
    loopWorker: 'main',
    counters: contract.counters(),
    dataset: contract.buildDataset(kind, args.datasetMb, false),
    allowCrash: args.allowCrash,
    headerTimeoutMs: args.headerTimeoutMs,
  };
  ctx.execute = contract.executeInline(ctx);
  ctx.stats = (done) => done({
    model: kind,
    pid: process.pid,
    uptime_ms: contract.uptimeMs(),
    workers: [{
      id: 0,
      pid: process.pid,
      state: ctx.stopping ? 'dead' : 'ready',
      requests: ctx.counters.requests,
      in_flight: ctx.counters.in_flight,
      errors: ctx.counters.errors,
      restarts: 0,
      loop_lag_ms: lag(),
    }],
  });
  const server = contract.createServer(ctx);
  contract.listen(kind, server, args.listen, log, (address) => {
    contract.announceReady(kind, address, 1);
    log.info(`ready on ${contract.formatAddr(address.address, address.port)}`);
  });
  contract.onStopSignals((signal) => {
    log.info(`${signal}: shutting down`);
    contract.stopServer(ctx, server, args.graceMs, () => process.exit(0));
  });
}

module.exports = { main };
