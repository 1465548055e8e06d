# Two small word-level BPE tokenizers exercising continuing_subword_prefix and end_of_word_suffix
# (WhitespaceSplit pre-tokenizer, Lowercase normalizer, no decoder), trained on the fixture texts.
import json, collections
cases = json.load(open('/work/shared/fixtures/tokenizer/falcon-cases.json'))['cases']
words = collections.Counter(w for c in cases for w in c['text'].lower().split())

def train(prefix, suffix, n_merges=400):
    def symbols(w):
        out = []
        for i, ch in enumerate(w):
            s = ch
            if i > 0 and prefix: s = prefix + s
            if i == len(w) - 1 and suffix: s = s + suffix
            out.append(s)
        return out
    seqs = {w: symbols(w) for w in words}
    vocab = {'<unk>': 0}
    for w, s in seqs.items():
        for t in s:
            if words[w] >= 2: vocab.setdefault(t, len(vocab))
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                if a in vocab and b in vocab: pairs[(a, b)] += words[w]
        if not pairs: break
        (a, b), n = pairs.most_common(1)[0]
        if n < 2: break
        merged = a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)
        merges.append(f'{a} {b}'); vocab.setdefault(merged, len(vocab))
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b: out.append(merged); i += 2
                else: out.append(s[i]); i += 1
            seqs[w] = out
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": 0, "content": "<unk>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}],
            "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": prefix, "end_of_word_suffix": suffix,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab, "merges": merges}}

json.dump(train('##', None), open('prefix-wordpiece-like.tokenizer.json', 'w'), ensure_ascii=False)
json.dump(train(None, '</w>'), open('suffix-openai-gpt-like.tokenizer.json', 'w'), ensure_ascii=False)
