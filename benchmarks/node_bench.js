// Shared harness of the node-only benchmark scripts (raw_showdown.js, replay_showdown.js).
//
// Each script warms up first (module loading, the Dex's lazy data, the JIT), prints
// "ready", waits for a line on stdin, then runs its measured part and prints one JSON
// line with the battles, their turns, the seconds and the CPU seconds it used. Python
// starts every worker, waits until all are ready and releases them together, so the
// measured wall time holds simulation only, like the Python paths' warm pools.
'use strict';
const readline = require('readline');

async function measured(warmUp, run) {
  await warmUp();
  process.stdout.write('ready\n');
  const input = readline.createInterface({input: process.stdin});
  await new Promise((resolve) => input.once('line', resolve));
  input.close();
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const report = await run();
  const used = process.cpuUsage(cpu);
  report.seconds = Number(process.hrtime.bigint() - start) / 1e9;
  report.cpu_seconds = (used.user + used.system) / 1e6;
  console.log(JSON.stringify(report));
}

module.exports = {measured};
