'use strict';
// The work a request can ask for: `/cpu`'s kernel and `/crash`'s faults.
// Shared by the processes (cluster workers, node-single) and the pool
// threads (node-threads), which differ only in what a fault ends.

const crypto = require('node:crypto');

// PBKDF2-HMAC-SHA256, password `password`, 32 bytes, as hex and a newline:
// one line of the contract's `/cpu` body, test vectors included. Part 0's
// salt is `salt`, part p's is `salt` followed by p (`salt1`, `salt2`, ...).
function cpuPart(iters, part) {
  const salt = part === 0 ? 'salt' : `salt${part}`;
  return crypto.pbkdf2Sync('password', salt, iters, 32, 'sha256').toString('hex') + '\n';
}

// Parts `first` to `first + count - 1`, one after another on this thread.
function cpu(iters, first, count) {
  let body = '';
  for (let part = first; part < first + count; part++) body += cpuPart(iters, part);
  return body;
}

const CRASH_MODES = ['panic', 'abort', 'exit', 'segv', 'hang'];

// Makes the fault happen here, now. `inThread` is true on a worker thread,
// where two of them must be done differently:
//
// - panic: an uncaught exception. In a process it ends the process (exit
//   status 1, Node's default for an uncaught exception); in a worker thread
//   it ends the thread and fires the Worker's 'error' event in the parent.
// - exit: process.exit(1). In a process it ends the process; in a worker
//   thread it ends only the thread.
// - abort: process.abort() in a process (SIGABRT). A worker thread cannot
//   call it (ERR_WORKER_UNSUPPORTED_OPERATION), so it sends SIGABRT to its
//   own process, which is what abort() does: the whole process ends.
// - segv: a real SIGSEGV delivered to the process, process.kill(pid,
//   'SIGSEGV'): JavaScript cannot touch an unmapped page. Node leaves the
//   default action in place, so the process dies by the signal, as it would
//   from a faulting native addon.
// - hang: a busy loop that never returns.
function crash(how, inThread, log) {
  log(`crashing on request: ${how}`);
  switch (how) {
    case 'panic':
      throw new Error('POST /crash?how=panic');
    case 'exit':
      process.exit(1);
      return;
    case 'abort':
      if (inThread) process.kill(process.pid, 'SIGABRT');
      else process.abort();
      break;
    case 'segv':
      process.kill(process.pid, 'SIGSEGV');
      break;
    case 'hang':
      for (;;) {
        // Spin: nothing else runs on this thread again.
      }
    default:
      throw new Error(`unknown crash mode ${how}`);
  }
  // A signal to one's own process arrives as the kill() returns; never
  // answer in the meantime.
  for (;;) {
    // Wait for the signal.
  }
}

module.exports = { cpu, crash, CRASH_MODES };
