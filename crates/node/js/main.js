'use strict';
// The entry point of every Node kind: `node main.js KIND [FLAGS...]`, run by
// the kind's binary (crates/node/src/bin/), which execs node so that the pid
// the harness started is the server's. A cluster worker runs this script
// again (cluster.fork() re-executes it with the same arguments) and takes
// the worker's path in cluster.js.

const KINDS = {
  'node-cluster': './cluster',
  'node-threads': './threads',
  'node-single': './single',
};

const [kind, ...argv] = process.argv.slice(2);
if (!Object.prototype.hasOwnProperty.call(KINDS, kind)) {
  process.stderr.write(`main.js: the first argument must be one of ${Object.keys(KINDS).join(', ')}, not ${kind}\n`);
  process.exit(2);
}
require(KINDS[kind]).main(kind, argv);
