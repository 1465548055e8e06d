// Reference outputs from Hugging Face tokenizers (Rust, via its Node binding) for Harpia's differential tests.
// usage: node reference.mjs <tokenizer.json> < texts.jsonl > cases.jsonl
//   each input line: {"text": "..."}; each output line: {"text", "ids", "ids_special", "decoded", "decoded_skip_special",
//   "offsets"} (offsets of the ids, in characters — code points — as this binding reports them)
import { Tokenizer } from "@anush008/tokenizers";
import { readFileSync } from "node:fs";

const tok = Tokenizer.fromFile(process.argv[2]);
const lines = readFileSync(0, "utf8").split("\n").filter((l) => l.length > 0);
for (const line of lines) {
  const { text } = JSON.parse(line);
  const plain = await tok.encode(text, null, { addSpecialTokens: false });
  const special = await tok.encode(text, null, { addSpecialTokens: true });
  const ids = plain.getIds();
  process.stdout.write(JSON.stringify({
    text,
    ids,
    ids_special: special.getIds(),
    decoded: await tok.decode(ids, false),
    decoded_skip_special: await tok.decode(ids, true),
    offsets: plain.getOffsets(),
  }) + "\n");
}
