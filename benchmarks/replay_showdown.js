// Raw simulator time of given battles: replays Showdown input logs, no Python, no players.
// usage: node replay_showdown.js <package dir> <logs.json> <mode> <worker index> <workers>
// logs.json holds a list of input logs (lists of ">..." lines); this process replays
// every <workers>-th one from <worker index>, after warming up on a few of them.
// Modes:
//   batch:  the whole log in one write. The simulator then never serialises the requests
//           of the turns in between (it sends requests lazily, once per write): pure
//           re-simulation, a lower bound no interactive player can reach.
//   choice: one write per choice, as a player makes them, so every request and log
//           update is produced and read as in a played battle; no decisions are made.
// prints "ready", waits for a stdin line, then {"battles","seconds","cpu_seconds","winners"}
// (winners in replay order, to check the replays are the same battles; see node_bench.js).
'use strict';
const fs = require('fs');
const path = require('path');
const {measured} = require('./node_bench.js');
const [pkgDir, logsFile, mode, indexArg, workersArg] = process.argv.slice(2);
const {BattleStream} = require(path.join(pkgDir, 'dist', 'sim', 'battle-stream.js'));
const logs = JSON.parse(fs.readFileSync(logsFile, 'utf8'))
  .filter((_, i) => i % Number(workersArg) === Number(indexArg));
const CHOICE = /^>(p1|p2|forcewin|forcetie)/;

async function replayOne(log) {
  const stream = new BattleStream();
  if (mode === 'batch') {
    void stream.write(log.join('\n'));
  } else {
    void stream.write(log.filter((line) => !CHOICE.test(line)).join('\n'));
    for (const line of log.filter((line) => CHOICE.test(line))) void stream.write(line);
  }
  stream.writeEnd();
  let winner = null;
  for await (const chunk of stream) {
    if (chunk.startsWith('end\n')) winner = JSON.parse(chunk.slice(4)).winner || null;
  }
  return winner;
}

async function replay(list) {
  const winners = [];
  for (const log of list) winners.push(await replayOne(log));
  return {battles: list.length, winners};
}

measured(() => replay(logs.slice(0, 4)), () => replay(logs));
