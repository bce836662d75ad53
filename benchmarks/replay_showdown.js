// Raw simulator time of given battles: replays Showdown input logs, no Python, no players.
// usage: node replay_showdown.js <package dir> <logs.json> <worker index> <workers>
// logs.json holds a list of input logs (lists of ">..." lines); this process replays
// every <workers>-th one from <worker index>. Prints {"battles":N,"seconds":S,"winners":[...]}
// (winners in replay order, to check the replays are the same battles).
'use strict';
const fs = require('fs');
const path = require('path');
const [pkgDir, logsFile, indexArg, workersArg] = process.argv.slice(2);
const {BattleStream} = require(path.join(pkgDir, 'dist', 'sim', 'battle-stream.js'));
const logs = JSON.parse(fs.readFileSync(logsFile, 'utf8'))
  .filter((_, i) => i % Number(workersArg) === Number(indexArg));

(async () => {
  const winners = [];
  const start = process.hrtime.bigint();
  for (const log of logs) {
    const stream = new BattleStream();
    void stream.write(log.join('\n'));
    stream.writeEnd();
    let winner = null;
    for await (const chunk of stream) {
      if (chunk.startsWith('end\n')) winner = JSON.parse(chunk.slice(4)).winner || null;
    }
    winners.push(winner);
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  console.log(JSON.stringify({battles: logs.length, seconds, winners}));
})();
