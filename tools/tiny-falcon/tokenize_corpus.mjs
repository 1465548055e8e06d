// Tokenize corpus.jsonl exactly with Hugging Face `tokenizers` (Rust) through its Node binding,
// npm package @anush008/tokenizers (wraps tokenizers 0.22).
//
//   node tools/tiny-falcon/tokenize_corpus.mjs TOKENIZER_JSON CORPUS_JSONL OUT_DIR
//
// NODE_PATH must reach a node_modules holding @anush008/tokenizers (see README.md).
// Each document is encoded with add_special_tokens = false and followed by <|endoftext|> (id 11).
// Writes OUT_DIR/train.bin and OUT_DIR/val.bin (little-endian uint16 ids). Every document is checked
// to decode back to its exact text; a document that does not round-trip stops the run.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

// Resolves from tools/tiny-falcon/node_modules upwards, then NODE_PATH.
const require = createRequire(import.meta.url);
const { Tokenizer } = require("@anush008/tokenizers");

const [tokPath, corpusPath, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: node tokenize_corpus.mjs TOKENIZER_JSON CORPUS_JSONL OUT_DIR");
  process.exit(2);
}
const tok = Tokenizer.fromFile(tokPath);
const EOS = tok.tokenToId("<|endoftext|>");
if (EOS !== 11) throw new Error(`${tokPath}: <|endoftext|> is ${EOS}, expected 11`);
const vocabSize = tok.getVocabSize(true);

const ids = { train: [], val: [] };
let docs = 0;
for (const line of fs.readFileSync(corpusPath, "utf8").split("\n")) {
  if (!line) continue;
  const { source, split, text } = JSON.parse(line);
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  const docIds = enc.getIds();
  const back = await tok.decode(docIds, false);
  if (back !== text) throw new Error(`${source}: decode(encode(text)) differs from the text`);
  for (const id of docIds) {
    if (id < 0 || id >= vocabSize) throw new Error(`${source}: id ${id} outside vocabulary ${vocabSize}`);
    ids[split].push(id);
  }
  ids[split].push(EOS);
  docs++;
}
fs.mkdirSync(outDir, { recursive: true });
for (const split of ["train", "val"]) {
  const arr = Uint16Array.from(ids[split]);
  fs.writeFileSync(path.join(outDir, `${split}.bin`), Buffer.from(arr.buffer));
}
console.log(`${docs} documents, vocab ${vocabSize}: train ${ids.train.length} tokens, val ${ids.val.length} tokens -> ${outDir}`);
