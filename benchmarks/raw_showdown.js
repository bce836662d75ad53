// Raw simulator speed, no Python: Showdown's own RandomPlayerAI on both sides.
// usage: node raw_showdown.js <package dir> <battles> <worker index (seed offset)> <workers>
// prints {"battles":N,"turns":T,"seconds":S}
'use strict';
const path = require('path');
const [pkgDir, battlesArg, offsetArg] = process.argv.slice(2);
const sim = path.join(pkgDir, 'dist', 'sim');
const {BattleStream, getPlayerStreams} = require(path.join(sim, 'battle-stream.js'));
const {RandomPlayerAI} = require(path.join(sim, 'tools', 'random-player-ai.js'));

async function playOne(i) {
  const streams = getPlayerStreams(new BattleStream());
  const seed = (k) => [i & 0xffff, (i >> 16) & 0xffff, k, Number(offsetArg)];
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

(async () => {
  const n = Number(battlesArg);
  const start = process.hrtime.bigint();
  let turns = 0;
  for (let i = 0; i < n; i++) turns += await playOne(i);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({battles: n, turns, seconds}));
})();
