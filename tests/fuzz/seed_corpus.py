#!/usr/bin/env python3
"""Writes a seed corpus for the fuzzers: the SQL string literals of the given C++ test
sources (adjacent literals joined, escapes decoded), one file per distinct statement.

    tests/fuzz/seed_corpus.py OUT_DIR tests/pg/analyzer_test.cc tests/pqxx_test.cc

Generated at run time into a temp dir (scripts/test's fuzz stage); never committed.
"""
import hashlib
import os
import re
import sys

LITERAL = re.compile(r'R"([^()\s]{0,16})\((.*?)\)\1"|"((?:[^"\\\n]|\\.)*)"', re.S)
SQL_WORD = re.compile(
    r'\b(select|insert|update|delete|merge|create|alter|drop|with|begin|commit|rollback|'
    r'savepoint|release|truncate|copy|set|reset|show|values|table|explain|do|call|grant|'
    r'revoke|lock|prepare|execute|discard|refresh|comment|vacuum|analyze|listen|notify)\b',
    re.I)
ESCAPES = {'n': '\n', 't': '\t', 'r': '\r', '0': '\0', '\\': '\\', '"': '"', "'": "'"}


def decode(body):
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == '\\' and i + 1 < len(body):
            n = body[i + 1]
            if n == 'x':
                m = re.match(r'[0-9a-fA-F]+', body[i + 2:])
                if m:
                    out.append(chr(int(m.group(0), 16) & 0xff))
                    i += 2 + len(m.group(0))
                    continue
            out.append(ESCAPES.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return ''.join(out)


def literals(text):
    """Yields each run of adjacent literals (only whitespace between them) joined."""
    run, end = [], None
    for m in LITERAL.finditer(text):
        s = m.group(2) if m.group(2) is not None else decode(m.group(3))
        if run and text[end:m.start()].strip() == '':
            run.append(s)
        else:
            if run:
                yield ''.join(run)
            run = [s]
        end = m.end()
    if run:
        yield ''.join(run)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seen = set()
    for src in sys.argv[2:]:
        with open(src, encoding='utf-8', errors='surrogateescape') as f:
            text = f.read()
        for sql in literals(text):
            if len(sql) < 4 or not SQL_WORD.search(sql) or sql in seen:
                continue
            seen.add(sql)
            data = sql.encode('utf-8', errors='surrogateescape')
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(out, name), 'wb') as f:
                f.write(data)
    print(f'{len(seen)} seeds in {out}', file=sys.stderr)


if __name__ == '__main__':
    main()
