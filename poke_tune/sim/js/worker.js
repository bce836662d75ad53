// poke-tune simulator worker: many Showdown battles multiplexed over stdin/stdout.
//
// Input, one line per command:   <battle id>\t<protocol line(s), newlines escaped as \f>
//   e.g. "17\t>start {...}\f>player p1 {...}\f>player p2 {...}" or "17\t>p1 move 2".
// Output, one frame per chunk: "<battle id> <payload bytes>\n<payload>", the payload being
//   the stream's own chunk: "update\n...", "sideupdate\np1\n|request|...", "end\n{...}".
//   A length prefix instead of JSON: nothing to escape here or to unescape in Python
//   (see frames.py).
// Special input "0\t#dex <json options>" prints the Dex extract as battle 0's payload
// (see dex.py).
// Special input "<id>\t#replay <lines joined by \f>" re-simulates a recorded input log
// (see replay.py): each line is its own write, as when the battle was played (the stream
// sends updates and requests after each write), then the stream is ended.
// Every battle's last frame is "closed": its stream has ended and nothing more follows.
//
// Each battle gets its own BattleStream (the package's server-less battle stream);
// the process lives as long as Python keeps stdin open.
'use strict';
const path = require('path');
const readline = require('readline');

const pkgDir = process.env.POKE_TUNE_SHOWDOWN_PKG;
const {BattleStream, Dex} = require(path.join(pkgDir, 'dist', 'sim', 'index.js'));

const battles = new Map();
const out = [];
let flushScheduled = false;

function emit(id, chunk) {
  out.push(`${id} ${Buffer.byteLength(chunk)}\n`, chunk);
  if (!flushScheduled) {
    flushScheduled = true;
    // Batch every chunk produced in this tick into one write: fewer syscalls, and Python
    // reads and handles the whole batch in one go.
    setImmediate(() => {
      flushScheduled = false;
      const text = out.join('');
      out.length = 0;
      process.stdout.write(text);
    });
  }
}

async function pump(id, stream) {
  try {
    for await (const chunk of stream) emit(id, chunk);
  } catch (err) {
    emit(id, 'error\n' + (err && err.stack || String(err)));
  }
  battles.delete(id);
  emit(id, 'closed\n');
}

function dexExtract(options) {
  const dex = Dex.forFormat(options.format || 'gen9randombattle');
  const species = {};
  for (const s of dex.species.all()) {
    if (!s.exists) continue;
    species[s.id] = {name: s.name, types: s.types, baseStats: s.baseStats};
  }
  const moves = {};
  for (const m of dex.moves.all()) {
    if (!m.exists) continue;
    moves[m.id] = {
      name: m.name, type: m.type, category: m.category, basePower: m.basePower,
      accuracy: m.accuracy === true ? 100 : m.accuracy, priority: m.priority,
    };
  }
  const types = {};
  for (const t of dex.types.all()) {
    if (!t.exists) continue;
    // damageTaken codes: 0 normal, 1 super effective, 2 resisted, 3 immune.
    types[t.name] = t.damageTaken;
  }
  return {format: dex.currentMod, gen: dex.gen, species, moves, types};
}

const rl = readline.createInterface({input: process.stdin, crlfDelay: Infinity});
rl.on('line', (line) => {
  const tab = line.indexOf('\t');
  if (tab < 0) return;
  const id = Number(line.slice(0, tab));
  const body = line.slice(tab + 1);
  if (body.startsWith('#dex')) {
    emit(id, JSON.stringify(dexExtract(JSON.parse(body.slice(4) || '{}'))));
    return;
  }
  let stream = battles.get(id);
  if (!stream) {
    stream = new BattleStream();
    battles.set(id, stream);
    pump(id, stream);
  }
  if (body.startsWith('#replay ')) {
    for (const inputLine of body.slice(8).split('\f')) stream.write(inputLine);
    stream.writeEnd();
    return;
  }
  stream.write(body.replace(/\f/g, '\n'));
});
// On stdin close the process ends by itself once pending output is flushed.
