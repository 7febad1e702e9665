'use strict';
// lab ipc's Node transports: what it costs to move a payload to a worker
// thread or a forked process, measured the way the Rust transports are
// (crates/ipc), so the rows compare.
//
//   node ipc.js TRANSPORT SIZES WARMUP MESSAGES DURATION_MS
//
// TRANSPORT is one of
//   node-clone     postMessage(Uint8Array) to a worker thread: structured clone
//   node-transfer  postMessage transferring the ArrayBuffer, which the
//                  worker transfers back with its ack (ownership moves, no copy)
//   node-sab       a SharedArrayBuffer both threads see, handed back and forth
//                  with Atomics.store/notify/wait (no copy)
//   node-send      process.send to a child_process.fork child, with
//                  serialization 'advanced' (V8's structured clone across
//                  processes; cluster workers get the same with
//                  cluster.setupPrimary({ serialization: 'advanced' }), and the
//                  default 'json' cannot carry binary at all without encoding it)
//
// A message is one round trip: stamp the sequence number into the payload's
// first 8 bytes (little-endian), hand the payload over, the receiver reads
// the first byte of every 4 KiB page and the last byte, and answers with the
// sequence number it read and the sum of those bytes. Its time runs from
// before the send to the ack's arrival. Per size: WARMUP untimed messages
// (at most a quarter of DURATION_MS), then timed ones until MESSAGES are done
// or DURATION_MS has passed, at least one. Each ack is checked after the
// clock stops; a wrong one ends the run with exit status 1.
//
// Prints {"transport": T, "sizes": [{"bytes": N, "ns": [..]}, ..]} on stdout.
// Node's standard library only.

const { Worker, isMainThread, parentPort, workerData } = require('worker_threads');
const { fork } = require('child_process');

const PAGE = 4096;
// The SharedArrayBuffer's header: turn (Int32 at 0), then Float64s: the
// length (at 8), the ack's seq (16) and check (24). The payload at 64.
const SAB_PAYLOAD_AT = 64;
const SENDER = 0;
const PEER = 1;
const STOP = 2;
const SPINS = 200;

function touch(bytes) {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += PAGE) sum += bytes[i];
  if (bytes.length > 0) sum += bytes[bytes.length - 1];
  return sum;
}

function seqOf(bytes) {
  return Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
}

function stamp(bytes, seq) {
  new DataView(bytes.buffer, bytes.byteOffset, 8).setBigUint64(0, BigInt(seq), true);
}

function ackOf(bytes) {
  return { seq: seqOf(bytes), check: touch(bytes) };
}

// Bytes that differ from position to position (xorshift32).
function fill(bytes) {
  let state = 0x9e3779b9;
  for (let i = 0; i < bytes.length; i++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[i] = state & 0xff;
  }
  return bytes;
}

// Spins briefly, then sleeps, until turn is one of `want`; returns it.
function waitTurn(header, want) {
  for (let i = 0; i < SPINS; i++) {
    const now = Atomics.load(header, 0);
    if (want.includes(now)) return now;
  }
  for (;;) {
    const now = Atomics.load(header, 0);
    if (want.includes(now)) return now;
    Atomics.wait(header, 0, now, 100);
  }
}

function pass(header, to) {
  Atomics.store(header, 0, to);
  Atomics.notify(header, 0, 1);
}

// ---- the receiving sides ----------------------------------------------------

function workerMain() {
  const { transport, sab } = workerData;
  if (transport === 'node-sab') {
    const header = new Int32Array(sab, 0, 1);
    const words = new Float64Array(sab, 8, 3);
    parentPort.postMessage('ready');
    for (;;) {
      if (waitTurn(header, [PEER, STOP]) === STOP) return;
      const bytes = new Uint8Array(sab, SAB_PAYLOAD_AT, words[0]);
      const ack = ackOf(bytes);
      words[1] = ack.seq;
      words[2] = ack.check;
      pass(header, SENDER);
    }
  }
  parentPort.on('message', (bytes) => {
    const ack = ackOf(bytes);
    if (transport === 'node-transfer') {
      parentPort.postMessage({ ...ack, bytes }, [bytes.buffer]);
    } else {
      parentPort.postMessage(ack);
    }
  });
  parentPort.postMessage('ready');
}

function childMain() {
  process.on('message', (bytes) => process.send(ackOf(bytes)));
  // No parent-death signal in Node: leave when the channel closes.
  process.on('disconnect', () => process.exit(0));
  process.send('ready');
}

// ---- the sending side ---------------------------------------------------------

// One awaited reply at a time from an event emitter.
function replies(emitter) {
  let waiting = null;
  emitter.on('message', (message) => {
    const resolve = waiting;
    waiting = null;
    if (resolve) resolve(message);
  });
  return () => new Promise((resolve) => { waiting = resolve; });
}

// A transport: open() gets it ready for sizes up to maxLen; prepare(len) is
// called before each size, untimed; exchange(seq, len) is one message and
// resolves to its ack; sent(len) is the payload as sent; close() ends it.
function openTransport(name, maxLen) {
  if (name === 'node-sab') {
    const sab = new SharedArrayBuffer(SAB_PAYLOAD_AT + maxLen);
    const header = new Int32Array(sab, 0, 1);
    const words = new Float64Array(sab, 8, 3);
    fill(new Uint8Array(sab, SAB_PAYLOAD_AT));
    const worker = new Worker(__filename, { workerData: { transport: name, sab } });
    const next = replies(worker);
    return {
      ready: next(),
      prepare() {},
      exchange(seq, len) {
        const bytes = new Uint8Array(sab, SAB_PAYLOAD_AT, len);
        stamp(bytes, seq);
        words[0] = len;
        pass(header, PEER);
        waitTurn(header, [SENDER]);
        return { seq: words[1], check: words[2] };
      },
      sent: (len) => new Uint8Array(sab, SAB_PAYLOAD_AT, len),
      async close() {
        pass(header, STOP);
        await new Promise((resolve) => worker.once('exit', resolve));
      },
    };
  }
  if (name === 'node-clone' || name === 'node-transfer') {
    const worker = new Worker(__filename, { workerData: { transport: name } });
    const next = replies(worker);
    // One buffer per size: cloning a view clones its whole ArrayBuffer.
    let bytes = null;
    return {
      ready: next(),
      prepare(len) { bytes = fill(new Uint8Array(len)); },
      async exchange(seq) {
        stamp(bytes, seq);
        if (name === 'node-clone') {
          worker.postMessage(bytes);
          return next();
        }
        worker.postMessage(bytes, [bytes.buffer]);
        const reply = await next();
        bytes = reply.bytes;
        return { seq: reply.seq, check: reply.check };
      },
      sent: () => bytes,
      async close() { await worker.terminate(); },
    };
  }
  if (name === 'node-send') {
    const child = fork(__filename, ['--child'], {
      serialization: 'advanced',
      // Our stdout is the JSON the harness reads: the child gets none.
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    const next = replies(child);
    let bytes = null;
    return {
      ready: next(),
      prepare(len) { bytes = fill(new Uint8Array(len)); },
      exchange(seq) {
        stamp(bytes, seq);
        child.send(bytes);
        return next();
      },
      sent: () => bytes,
      async close() {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.disconnect();
        await exited;
      },
    };
  }
  throw new Error(`unknown transport ${name}`);
}

async function main() {
  const [name, sizesText, warmupText, messagesText, durationText] = process.argv.slice(2);
  const sizes = (sizesText || '').split(',').filter(Boolean).map(Number);
  const warmup = Number(warmupText);
  const messages = Number(messagesText);
  const durationNs = BigInt(Math.round(Number(durationText) * 1e6));
  if (!sizes.length || sizes.some((n) => !Number.isInteger(n) || n < 8)
      || !Number.isInteger(warmup) || !Number.isInteger(messages) || messages < 1) {
    throw new Error('usage: node ipc.js TRANSPORT SIZES WARMUP MESSAGES DURATION_MS');
  }
  const transport = openTransport(name, Math.max(...sizes));
  await transport.ready;
  let seq = 0;
  const one = async (len) => {
    seq += 1;
    const start = process.hrtime.bigint();
    const ack = await transport.exchange(seq, len);
    const took = process.hrtime.bigint() - start;
    const want = ackOf(transport.sent(len));
    if (ack.seq !== seq || want.seq !== seq || ack.check !== want.check) {
      throw new Error(`${name} message ${seq}: got ${JSON.stringify(ack)}, want ${JSON.stringify(want)}`);
    }
    return took;
  };
  const out = [];
  for (const len of sizes) {
    transport.prepare(len);
    const warm = process.hrtime.bigint();
    for (let i = 0; i < warmup; i++) {
      await one(len);
      if (process.hrtime.bigint() - warm > durationNs / 4n) break;
    }
    const ns = [];
    const start = process.hrtime.bigint();
    while (ns.length === 0
           || (ns.length < messages && process.hrtime.bigint() - start < durationNs)) {
      ns.push(Number(await one(len)));
    }
    out.push({ bytes: len, ns });
  }
  await transport.close();
  process.stdout.write(JSON.stringify({ transport: name, sizes: out }) + '\n');
}

if (!isMainThread) {
  workerMain();
} else if (process.argv[2] === '--child') {
  childMain();
} else {
  main().catch((error) => {
    process.stderr.write(`ipc.js: ${error.message}\n`);
    process.exit(1);
  });
}
