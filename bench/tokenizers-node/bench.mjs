// Hugging Face tokenizers (Rust) through its Node binding: encode one text file, single call, several runs.
// usage: TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 node bench.mjs <tokenizer.json> <text file> [runs]
// Two modes, like Harpia's side: the whole file in one encode call ("document"), and one call per line.
// prints one JSON line: {"bytes", "tokens", "checksum", "runs_ms", "line_tokens", "lines_ms"}
// (checksum: sum of id*(index+1) mod 2^32 over the document encoding)
import { Tokenizer } from "@anush008/tokenizers";
import { readFileSync } from "node:fs";

const [tokenizerPath, textPath, runsArg] = process.argv.slice(2);
const runs = Number(runsArg ?? 5);
const tok = Tokenizer.fromFile(tokenizerPath);
const text = readFileSync(textPath, "utf8");
const bytes = Buffer.byteLength(text, "utf8");

let ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds(); // warm-up (fills the word cache)
for (const line of text.split("\n")) await tok.encode(line, null, { addSpecialTokens: false }); // same warm-up as Harpia
const runsMs = [];
for (let r = 0; r < runs; r++) {
  const t0 = process.hrtime.bigint();
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  ids = enc.getIds();
  runsMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
const lines = text.split("\n");
const linesMs = [];
let lineTokens = 0;
for (let r = 0; r < runs; r++) {
  lineTokens = 0;
  const t0 = process.hrtime.bigint();
  for (const line of lines) lineTokens += (await tok.encode(line, null, { addSpecialTokens: false })).getIds().length;
  linesMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
let checksum = 0;
for (let i = 0; i < ids.length; i++) checksum = (checksum + Math.imul(ids[i], i + 1)) >>> 0;
console.log(JSON.stringify({ bytes, tokens: ids.length, checksum, runs_ms: runsMs, line_tokens: lineTokens, lines_ms: linesMs }));
