"""Collect the training text from files that a Debian 12 machine with python3 has, into one JSONL.

    /usr/bin/python3 tools/tiny-falcon/build_corpus.py OUT_DIR

Sources (English, plus the project's Portuguese guide), one document each:
  1. Python's pydoc topics: /usr/lib/python3.11/pydoc_data/topics.py (the `topics` dict, 79 entries;
     Debian's python3.11, `python3 -c "import pydoc_data.topics"`).
  2. /usr/share/common-licenses/* (symlinks such as GPL -> GPL-3 are skipped, each text taken once).
  3. Man pages (sections 1-8) shipped by the Debian packages coreutils, findutils, grep, sed, tar,
     gzip, bash and make, rendered to plain text with `MANWIDTH=80 man -P cat <file>` and `col -bx`.
  4. Vim's user manual: /usr/share/vim/vim90/doc/usr_*.txt.
  5. The Portuguese guide /work/shared/seed/000_a5de92c1e32550ca.txt (if present).

Writes OUT_DIR/corpus.jsonl ({"source", "split", "text"} per line; split is "val" for ~1 document in
20, chosen by a hash of the source name, else "train") and OUT_DIR/manifest.txt (source, split, chars,
sha256 of the text). The exact list of files is the manifest; it is reproduced in README.md.
"""

import glob
import hashlib
import json
import os
import subprocess
import sys

MAN_PACKAGES = ["coreutils", "findutils", "grep", "sed", "tar", "gzip", "bash", "make"]
SEED = "/work/shared/seed/000_a5de92c1e32550ca.txt"


def pydoc_topics():
    # Load Debian's file by path so the result does not depend on which python runs this script.
    path = "/usr/lib/python3.11/pydoc_data/topics.py"
    scope = {}
    with open(path, encoding="utf-8") as f:
        exec(compile(f.read(), path, "exec"), scope)
    for name in sorted(scope["topics"]):
        yield f"{path}#{name}", scope["topics"][name]


def licenses():
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="strict") as f:
            yield path, f.read()


def man_pages():
    files = []
    for pkg in MAN_PACKAGES:
        out = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if "/usr/share/man/man" in line and line.endswith(".gz") and os.path.isfile(line) and not os.path.islink(line):
                files.append(line)
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    for path in sorted(set(files)):
        rendered = subprocess.run(["man", "-P", "cat", path], capture_output=True, env=env).stdout
        text = subprocess.run(["col", "-bx"], input=rendered, capture_output=True, env=env).stdout.decode("utf-8", "replace")
        if len(text.strip()) > 200:
            yield path, text


def vim_manual():
    for path in sorted(glob.glob("/usr/share/vim/vim90/doc/usr_*.txt")):
        with open(path, encoding="utf-8", errors="replace") as f:
            yield path, f.read()


def seed():
    if os.path.exists(SEED):
        with open(SEED, encoding="utf-8") as f:
            yield SEED, f.read()


def clean(text: str) -> str:
    # Normalise line endings and strip trailing blanks; keep everything else verbatim.
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    out = "\n".join(lines).strip("\n")
    while "\n\n\n\n" in out:
        out = out.replace("\n\n\n\n", "\n\n\n")
    return out + "\n"


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    total = {"train": 0, "val": 0}
    with open(os.path.join(out_dir, "corpus.jsonl"), "w", encoding="utf-8") as out, \
            open(os.path.join(out_dir, "manifest.txt"), "w", encoding="utf-8") as man:
        for gen in (pydoc_topics, licenses, man_pages, vim_manual, seed):
            for source, text in gen():
                text = clean(text)
                split = "val" if int(hashlib.sha256(source.encode()).hexdigest(), 16) % 20 == 0 else "train"
                total[split] += len(text)
                out.write(json.dumps({"source": source, "split": split, "text": text}, ensure_ascii=False) + "\n")
                man.write(f"{source}\t{split}\t{len(text)}\t{hashlib.sha256(text.encode()).hexdigest()}\n")
    print(f"train {total['train']:,} chars, val {total['val']:,} chars -> {out_dir}")


if __name__ == "__main__":
    main()
