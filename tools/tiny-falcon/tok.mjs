// Encode/decode with Hugging Face `tokenizers` (npm @anush008/tokenizers) for the Python scripts.
//   echo '{"encode": ["text", ...]}' | node tok.mjs TOKENIZER_JSON   -> {"ids": [[...], ...]}
//   echo '{"decode": [[ids], ...]}'  | node tok.mjs TOKENIZER_JSON   -> {"text": ["...", ...]}
// encode uses add_special_tokens = false; decode keeps special tokens (skip_special_tokens = false).
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Tokenizer } = require("@anush008/tokenizers");
const tok = Tokenizer.fromFile(process.argv[2]);
const req = JSON.parse(fs.readFileSync(0, "utf8"));
const out = {};
if (req.encode) {
  out.ids = [];
  for (const t of req.encode) out.ids.push((await tok.encode(t, null, { addSpecialTokens: false })).getIds());
}
if (req.decode) {
  out.text = [];
  for (const ids of req.decode) out.text.push(await tok.decode(ids, false));
}
process.stdout.write(JSON.stringify(out));
