'use strict';
// node-threads: one Node process whose event loop serves HTTP and sends
// `/cpu` (and `/crash`) jobs to a pool of N worker_threads through a bounded
// queue: the Node twin of the Rust `threadpool`.
//
// - `/`, `/io`, `/data`, `/stats` stay on the event loop (`x-worker: main`);
//   a job answers with the slot of the thread that ran it.
// - The queue holds up to --queue jobs waiting for a free thread; a request
//   whose jobs do not fit (a `/cpu` of P parts is P jobs) is refused at
//   once, whole: 503 with `retry-after: 1`.
// - The dataset is one SharedArrayBuffer, handed to every thread without a
//   copy (the loop serves `/data` from it).
// - A thread that ends (an uncaught exception: the Worker's 'error' event;
//   process.exit() in the thread) fails its job with a 500 and is replaced
//   in its slot. A thread whose job runs over --worker-timeout-ms is
//   terminated (worker.terminate(), which Node can do and a Rust thread
//   cannot: V8 stops the JavaScript at its next interrupt check), its job
//   answered 500, and a replacement started at once. Until the terminated
//   thread has really ended (native code, such as a long pbkdf2Sync, runs to
//   its end first) it is listed under `lost`.
// - abort and segv end the whole process, as a native crash in any thread
//   does.

const path = require('node:path');
const fs = require('node:fs');
const { Worker } = require('node:worker_threads');

const contract = require('./contract');

const ABOUT = 'The lab\'s Node worker_threads server: one event loop, a pool of worker threads '
  + 'fed by a bounded queue.';

const THREAD_SCRIPT = path.join(__dirname, 'pool-thread.js');
// Respawn backoff for a slot whose threads keep dying quickly.
const BACKOFF_START_MS = 100;
const BACKOFF_MAX_MS = 10000;
const STABLE_LIFE_MS = 30000;

function flags() {
  return [
    {
      name: '--queue', key: 'queue', value: 'JOBS', parse: contract.integer(1n, 4294967295n), default: '1024',
      help: 'Capacity of the job queue in front of the pool; when it is full, /cpu answers 503 '
        + 'with retry-after: 1 at once',
    },
    {
      name: '--worker-timeout-ms', key: 'workerTimeoutMs', value: 'MS',
      parse: contract.integer(0n, 2n ** 64n - 1n), default: '10000',
      help: 'Terminate and replace a pool thread whose job has run this long (0: never)',
    },
  ];
}

// CPU time of one of this process's threads, in ms, from /proc (clock ticks
// of 10 ms, Linux's USER_HZ); undefined when unreadable.
function threadCpuMs(tid) {
  try {
    const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15, counted from 1 with pid first.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return undefined;
  }
}

// A request's answer from its parts' answers, in part order: their bodies
// one after another and the first part's worker, or the first that failed.
function joined(answers) {
  const failed = answers.find((answer) => answer.status !== 200);
  if (failed) return failed;
  return { status: 200, body: answers.map((answer) => answer.body).join(''), worker: answers[0].worker };
}

class Pool {
  constructor(size, capacity, timeoutMs, dataset, log, onReady) {
    this.capacity = capacity;
    this.timeoutMs = timeoutMs;
    this.dataset = dataset;
    this.log = log;
    this.onReady = onReady;
    this.queue = [];
    this.rejected = 0;
    this.lost = [];
    this.stopping = false;
    this.nextJobId = 0;
    this.slots = Array.from({ length: size }, (_, id) => ({
      id,
      worker: null,
      tid: undefined,
      state: 'starting',
      requests: 0,
      in_flight: 0,
      errors: 0,
      restarts: 0,
      job: null,
      startedAt: 0,
      quickDeaths: 0,
      respawn: null,
    }));
    for (const slot of this.slots) this.spawn(slot);
    if (timeoutMs > 0) {
      const every = Math.max(10, Math.min(100, Math.floor(timeoutMs / 4)));
      setInterval(() => this.watch(), every).unref();
    }
  }

  spawn(slot) {
    slot.respawn = null;
    const worker = new Worker(THREAD_SCRIPT, {
      workerData: { slot: slot.id, dataset: this.dataset },
      // The thread's stdout is the process's: keep it off the ready line's
      // stream.
      stdout: true,
    });
    worker.stdout.pipe(process.stderr, { end: false });
    Object.assign(slot, { worker, tid: undefined, state: 'starting', startedAt: Date.now() });
    worker.on('message', (message) => {
      if (slot.worker !== worker) return;
      if (message.t === 'ready') {
        slot.tid = message.tid;
        slot.state = 'ready';
        this.onReady();
        this.next(slot);
      } else if (message.t === 'done' && slot.job && slot.job.id === message.id) {
        this.finish(slot, { status: 200, body: message.body, worker: String(slot.id) });
        this.next(slot);
      }
    });
    worker.on('error', (error) => {
      // An uncaught exception in the thread: it ends, 'exit' follows.
      if (slot.worker !== worker) return;
      this.log.warn(`pool thread ${slot.id} (tid ${slot.tid}) threw: ${error && error.message}`);
      this.finish(slot, this.failure(slot, `the job threw on pool thread ${slot.id}`));
    });
    worker.on('exit', (code) => this.exited(slot, worker, code));
  }

  exited(slot, worker, code) {
    const lost = this.lost.findIndex((entry) => entry.worker === worker);
    if (lost >= 0) {
      this.log.info(`terminated pool thread (slot ${slot.id}, tid ${this.lost[lost].tid}) has ended`);
      this.lost.splice(lost, 1);
      return;
    }
    if (slot.worker !== worker) return;
    slot.worker = null;
    slot.state = 'dead';
    if (slot.job) this.finish(slot, this.failure(slot, `pool thread ${slot.id} exited before answering`));
    if (this.stopping) return;
    const lived = Date.now() - slot.startedAt;
    if (lived >= STABLE_LIFE_MS) slot.quickDeaths = 0;
    const n = slot.quickDeaths++;
    const delay = n === 0 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** Math.min(n - 1, 16));
    this.log.warn(`pool thread ${slot.id} (tid ${slot.tid}) ended with exit code ${code}; replacing it ${delay ? `in ${delay} ms` : 'at once'}`);
    slot.respawn = setTimeout(() => {
      slot.restarts++;
      this.spawn(slot);
    }, delay);
  }

  failure(slot, message) {
    return { status: 500, body: `${message}\n`, worker: String(slot.id) };
  }

  // Runs a request's job now on free threads, queues it, or refuses it
  // (503). A `/cpu` job of P parts is P jobs, one message each, which run
  // on as many threads as are free; the request is admitted whole, when the
  // parts that find no free thread fit in the queue, or not at all.
  submit(job, done) {
    const jobs = job.kind === 'cpu'
      ? Array.from({ length: job.count }, (_, i) => ({ kind: 'cpu', iters: job.iters, first: job.first + i, count: 1 }))
      : [job];
    const free = this.slots.filter((slot) => slot.state === 'ready' && slot.job === null);
    if (jobs.length - Math.min(free.length, jobs.length) > this.capacity - this.queue.length) {
      this.rejected++;
      done({
        status: 503,
        body: `the job queue is full (${this.capacity} jobs); retry later\n`,
        worker: 'main',
        headers: { 'retry-after': '1' },
      });
      return;
    }
    const answers = new Array(jobs.length);
    let left = jobs.length;
    jobs.forEach((part, i) => {
      const entry = {
        id: ++this.nextJobId,
        job: part,
        done: (answer) => {
          answers[i] = answer;
          if (--left === 0) done(joined(answers));
        },
      };
      if (i < free.length) this.run(free[i], entry);
      else this.queue.push(entry);
    });
  }

  run(slot, entry) {
    slot.job = entry;
    slot.startedAt = Date.now();
    slot.requests++;
    slot.in_flight++;
    slot.worker.postMessage({ id: entry.id, ...entry.job });
  }

  next(slot) {
    if (slot.state === 'ready' && slot.job === null && this.queue.length > 0) {
      this.run(slot, this.queue.shift());
    }
  }

  finish(slot, result) {
    const entry = slot.job;
    if (!entry) return;
    slot.job = null;
    slot.in_flight--;
    if (result.status >= 500) slot.errors++;
    entry.done(result);
  }

  // Terminates threads whose job has run over the timeout and starts
  // their replacements.
  watch() {
    const now = Date.now();
    for (const slot of this.slots) {
      if (!slot.job || now - slot.startedAt <= this.timeoutMs) continue;
      const age = now - slot.startedAt;
      const { worker, tid } = slot;
      this.log.warn(`pool thread ${slot.id} (tid ${tid}) hung: its job has run ${age} ms; terminating it`);
      this.finish(slot, this.failure(slot, `pool thread ${slot.id} hung: terminated after ${age} ms`));
      this.lost.push({ slot: slot.id, tid, since: now, worker });
      worker.terminate();
      slot.worker = null;
      slot.state = 'dead';
      slot.restarts++;
      this.spawn(slot);
    }
  }

  stats() {
    const workers = this.slots.map((slot) => {
      const entry = { id: slot.id, pid: process.pid };
      if (slot.tid !== undefined) entry.tid = slot.tid;
      return Object.assign(entry, {
        state: slot.state,
        requests: slot.requests,
        in_flight: slot.in_flight,
        errors: slot.errors,
        restarts: slot.restarts,
        busy: slot.job !== null,
      });
    });
    const now = Date.now();
    const lost = this.lost.map((entry) => {
      const out = { slot: entry.slot, tid: entry.tid, lost_for_ms: now - entry.since };
      const cpu = threadCpuMs(entry.tid);
      if (cpu !== undefined) out.cpu_ms = cpu;
      // Its request was answered (500) when it was terminated.
      out.in_flight = 0;
      return out;
    });
    return {
      workers,
      queue: { depth: this.queue.length, capacity: this.capacity, rejected: this.rejected },
      lost,
    };
  }

  async close() {
    this.stopping = true;
    for (const slot of this.slots) clearTimeout(slot.respawn);
    await Promise.all(
      [...this.slots.map((slot) => slot.worker), ...this.lost.map((entry) => entry.worker)]
        .filter(Boolean)
        .map((worker) => worker.terminate()),
    );
  }
}

function main(kind, argv) {
  const args = contract.parseFlags(kind, ABOUT, argv, flags());
  const log = contract.logger(kind);
  const lag = contract.loopLag();
  const data = contract.buildDataset(kind, args.datasetMb, true);
  let address = null;
  let announced = false;
  const announce = () => {
    if (announced || address === null || !pool.slots.every((slot) => slot.state === 'ready')) return;
    announced = true;
    contract.announceReady(kind, address, pool.slots.length);
    log.info(`ready on ${contract.formatAddr(address.address, address.port)} with ${pool.slots.length} pool threads`);
  };
  const pool = new Pool(args.workers, args.queue, args.workerTimeoutMs, data && data.buffer, log, announce);

  const ctx = {
    kind,
    log,
    loopWorker: 'main',
    counters: contract.counters(),
    dataset: data,
    allowCrash: args.allowCrash,
    headerTimeoutMs: args.headerTimeoutMs,
    execute: (job, done) => pool.submit(job, done),
  };
  ctx.stats = (done) => {
    const { workers, queue, lost } = pool.stats();
    done({
      model: kind,
      pid: process.pid,
      uptime_ms: contract.uptimeMs(),
      workers,
      main: { pid: process.pid, ...ctx.counters },
      loop_lag_ms: lag(),
      queue,
      lost,
    });
  };

  const server = contract.createServer(ctx);
  contract.listen(kind, server, args.listen, log, (bound) => {
    address = bound;
    announce();
  });

  // Requests waiting on queued jobs hold their connections open, so the
  // drain lets queued jobs finish too; then the threads are terminated.
  contract.onStopSignals((signal) => {
    log.info(`${signal}: shutting down`);
    contract.stopServer(ctx, server, args.graceMs, async () => {
      await pool.close();
      process.exit(0);
    });
  });
}

module.exports = { main };
