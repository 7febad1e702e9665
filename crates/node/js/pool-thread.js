'use strict';
// One pool thread of node-threads: takes a job from the event loop, runs it
// synchronously on this thread, posts the answer back. The loop sends a
// thread one job at a time.

const fs = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');

const { cpu, crash } = require('./work');

// This thread's kernel thread id, what the contract's `tid` is (Node's
// `threadId` is its own counter). /proc/thread-self is the calling thread's
// /proc/PID/task/TID.
const tid = Number(fs.readlinkSync('/proc/thread-self').split('/').pop());

const log = (message) => {
  process.stderr.write(`${new Date().toISOString()}  WARN pool thread ${workerData.slot} (tid ${tid}): ${message}\n`);
};

parentPort.on('message', (job) => {
  if (job.kind === 'cpu') {
    parentPort.postMessage({ t: 'done', id: job.id, body: cpu(job.iters, job.first, job.count) });
  } else {
    // In a thread: panic throws out of this handler, exit ends the thread,
    // abort and segv signal the whole process, hang spins here.
    crash(job.how, true, log);
  }
});

parentPort.postMessage({ t: 'ready', tid });
