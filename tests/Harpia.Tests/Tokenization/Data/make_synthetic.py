# Builds small synthetic tokenizer.json files exercising components Falcon does not use.
import json, collections, copy
falcon = json.load(open('/work/shared/fixtures/falcon/tokenizer.json'))
cases = json.load(open('/work/shared/fixtures/tokenizer/falcon-cases.json'))['cases']
corpus = [c['text'] for c in cases]

# --- SentencePiece-style BPE trained on the fixture texts (▁ for spaces, byte fallback) ---
words = collections.Counter()
for t in corpus:
    s = '▁' + t.replace(' ', '▁')
    cur = ''
    for ch in s:
        if ch == '▁' and cur: words[cur] += 1; cur = ''
        cur += ch
    if cur: words[cur] += 1
chars = collections.Counter(ch for w, n in words.items() for ch in w for _ in range(n))
base = [c for c, n in chars.most_common() if n >= 3]
vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
for b in range(256): vocab['<0x%02X>' % b] = len(vocab)
for c in base:
    if c not in vocab: vocab[c] = len(vocab)
seqs = {w: list(w) for w in words}
merges = []
for _ in range(600):
    pairs = collections.Counter()
    for w, n in words.items():
        s = seqs[w]
        for a, b in zip(s, s[1:]):
            if a in vocab and b in vocab: pairs[(a, b)] += n
    if not pairs: break
    (a, b), n = pairs.most_common(1)[0]
    if n < 2: break
    merges.append([a, b]); vocab.setdefault(a + b, len(vocab))
    for w in words:
        s = seqs[w]; i = 0; out = []
        while i < len(s):
            if i + 1 < len(s) and s[i] == a and s[i+1] == b: out.append(a + b); i += 2
            else: out.append(s[i]); i += 1
        seqs[w] = out
vocab['<extra>'] = len(vocab)
vocab['Hello'] = len(vocab)  # so an added token content also exists in the model vocab
def added(i, content, special, lstrip=False, rstrip=False, single=False, normalized=False):
    return {"id": i, "content": content, "single_word": single, "lstrip": lstrip, "rstrip": rstrip, "normalized": normalized, "special": special}
n = len(vocab)
sp_added = [added(0, '<unk>', True), added(1, '<s>', True), added(2, '</s>', True),
            added(n, '<mask>', True, lstrip=True), added(n + 1, '[END]', False, rstrip=True),
            added(n + 2, 'cat', False, single=True), added(n + 3, 'Ünï', False, normalized=True)]
llama2 = {
  "version": "1.0", "truncation": None, "padding": None, "added_tokens": sp_added,
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
  "pre_tokenizer": None,
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                     "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                     "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": True, "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": merges},
}
json.dump(llama2, open('llama2-style.tokenizer.json', 'w'), ensure_ascii=False)

# Metaspace pre-tokenizer + NFKC/Lowercase normalizers + Metaspace decoder, no byte fallback (unknown chars → <unk>)
meta = copy.deepcopy(llama2)
meta["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": False, "strip_right": True}]}
meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
meta["decoder"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}
meta["model"]["byte_fallback"] = False
meta["model"]["fuse_unk"] = False
meta["post_processor"] = {"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]}
json.dump(meta, open('metaspace-nfkc.tokenizer.json', 'w'), ensure_ascii=False)

# GPT-2 style on Falcon's byte-level vocabulary: ByteLevel(add_prefix_space) pre-tokenizer, NFC, ByteLevel processor
gpt2 = copy.deepcopy(falcon)
gpt2["normalizer"] = {"type": "NFC"}
gpt2["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
gpt2["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
gpt2["added_tokens"].append({"id": 65000, "content": " lstripped", "single_word": False, "lstrip": True, "rstrip": True, "normalized": True, "special": False})
json.dump(gpt2, open('gpt2-style.tokenizer.json', 'w'), ensure_ascii=False)

# Llama-3 style: Split with Llama-3's pattern, ByteLevel without regex, ignore_merges, Sequence post-processor
llama3 = copy.deepcopy(falcon)
llama3["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
llama3["model"]["ignore_merges"] = True
llama3["post_processor"] = {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [11], "tokens": ["<|endoftext|>"]}}}]}
json.dump(llama3, open('llama3-style.tokenizer.json', 'w'), ensure_ascii=False)
print(len(vocab), len(merges))
