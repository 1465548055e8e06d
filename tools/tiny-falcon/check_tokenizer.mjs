// Sanity check of the truncated tokenizer against the shared tokenizer cases (HF `tokenizers`, Node).
//   node tools/tiny-falcon/check_tokenizer.mjs models/harpia-tiny-falcon/tokenizer.json \
//        /work/shared/fixtures/tokenizer/falcon-cases.json
// For every case: decode(encode(text)) must give the text back (when the full Falcon tokenizer's own
// decode does), and where the full Falcon tokenizer's ids are all below the truncated vocabulary
// size, the truncated tokenizer must produce the very same ids.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Tokenizer } = require("@anush008/tokenizers");
const [tokPath, casesPath] = process.argv.slice(2);
const tok = Tokenizer.fromFile(tokPath);
const K = tok.getVocabSize(true);
const raw = JSON.parse(fs.readFileSync(casesPath, "utf8"));
const cases = Array.isArray(raw) ? raw : raw.cases;
let same = 0, sameChecked = 0, roundtrip = 0, roundtripChecked = 0, failures = 0;
for (const c of cases) {
  const ids = (await tok.encode(c.text, null, { addSpecialTokens: false })).getIds();
  if (ids.some((i) => i >= K)) { console.log(`FAIL id >= ${K}: ${JSON.stringify(c.text).slice(0, 60)}`); failures++; }
  const back = await tok.decode(ids, false);
  if (c.decoded === undefined || c.decoded === c.text) {
    roundtripChecked++;
    if (back === c.text) roundtrip++; else { console.log(`FAIL round trip: ${JSON.stringify(c.text).slice(0, 60)}`); failures++; }
  }
  if (c.ids.every((i) => i < K)) {
    sameChecked++;
    if (JSON.stringify(ids) === JSON.stringify(c.ids)) same++;
    else { console.log(`FAIL differs from full Falcon: ${JSON.stringify(c.text).slice(0, 60)}`); failures++; }
  }
}
console.log(`${cases.length} cases; round trip ${roundtrip}/${roundtripChecked}; ids identical to full Falcon ${same}/${sameChecked} (cases whose full ids are all < ${K})`);
process.exit(failures ? 1 : 0);
