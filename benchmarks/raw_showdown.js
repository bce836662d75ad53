// Raw simulator speed, no Python: Showdown's own RandomPlayerAI on both sides.
// usage: node raw_showdown.js <package dir> <battles> <worker index (seed offset)> <workers>
// prints "ready", waits for a stdin line, then {"battles","turns","seconds","cpu_seconds"}
// (see node_bench.js).
'use strict';
const path = require('path');
const {measured} = require('./node_bench.js');
const [pkgDir, battlesArg, offsetArg] = process.argv.slice(2);
const sim = path.join(pkgDir, 'dist', 'sim');
const {BattleStream, getPlayerStreams} = require(path.join(sim, 'battle-stream.js'));
const {RandomPlayerAI} = require(path.join(sim, 'tools', 'random-player-ai.js'));

async function playOne(i, offset) {
  const streams = getPlayerStreams(new BattleStream());
  const seed = (k) => [i & 0xffff, (i >> 16) & 0xffff, k, offset];
  new RandomPlayerAI(streams.p1, {seed: seed(1)}).start();
  new RandomPlayerAI(streams.p2, {seed: seed(2)}).start();
  void streams.omniscient.write(
    `>start {"formatid":"gen9randombattle","seed":${JSON.stringify(seed(0))}}\n` +
    `>player p1 {"name":"p1","seed":${JSON.stringify(seed(3))}}\n` +
    `>player p2 {"name":"p2","seed":${JSON.stringify(seed(4))}}`);
  let turns = 0;
  for await (const chunk of streams.omniscient) {
    const m = chunk.match(/\|turn\|(\d+)/g);
    if (m) turns = Number(m[m.length - 1].slice(6));
  }
  return turns;
}

async function play(n, offset) {
  let turns = 0;
  for (let i = 0; i < n; i++) turns += await playOne(i, offset);
  return {battles: n, turns};
}

measured(
  () => play(4, 1000 + Number(offsetArg)), // other seeds than the measured battles
  () => play(Number(battlesArg), Number(offsetArg)),
);
