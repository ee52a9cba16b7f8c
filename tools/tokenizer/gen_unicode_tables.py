#!/usr/bin/python3
"""Generates common/text/unicode_tables.inc: the Unicode data gka::text needs for NFC
(UAX #15) and for the \\w test of added tokens, so the router needs no ICU at run time.

    tools/tokenizer/gen_unicode_tables.py [--out common/text/unicode_tables.inc] [--check]

Source: Python's `unicodedata` (its `unidata_version` is written into the tables), plus one
property Python does not expose, Alphabetic, read from Perl's core Unicode database,
which must be the same Unicode version (checked). --check regenerates in memory and exits 1
when the checked-in file differs (exit 77 when this Python's Unicode version is not the one
the file was made from: then the comparison would be meaningless).

What is generated (all derived from UnicodeData via unicodedata, none typed by hand):
  - per code point, 16 bits: canonical combining class (bits 0-7), NFC_QC=No (bit 8),
    NFC_QC=Maybe (bit 9), Rust regex \\w (bit 10), has a canonical decomposition (bit 11);
    in a two-stage table (blocks of 128 code points, identical blocks shared).
    NFC_QC=No is exactly Full_Composition_Exclusion, i.e. the code points whose NFC is not
    themselves; NFC_QC=Maybe is every second code point of a primary composite's canonical
    pair, plus the Hangul vowel and trailing jamo (algorithmic composition).
  - the full (recursive) canonical decomposition of every code point that has one, Hangul
    syllables excepted (algorithmic);
  - the primary composites: (first, second) -> composite, for every canonical pair whose
    composite is not excluded from composition (NFC(composite) == composite).
\\w is Rust regex's Unicode word class (what HF's single_word rule asks of neighbours):
Alphabetic (L*, Nl and Other_Alphabetic), marks (M*), Nd, Pc and Join_Control (U+200C/D).
"""
import argparse
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "common/text/unicode_tables.inc"
MAX_CP = 0x10FFFF
BLOCK = 128  # code points per second-stage block

S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def alphabetic():
    """Alphabetic from Perl's core Unicode database (Python has no such property)."""
    script = (
        "use Unicode::UCD qw(prop_invlist);"
        "print Unicode::UCD::UnicodeVersion(), qq(\\n);"
        "my @l = prop_invlist('Alphabetic');"
        "print join(' ', @l), qq(\\n);")
    out = subprocess.run(["perl", "-e", script], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    version, invlist = out[0].strip(), [int(x) for x in out[1].split()]
    if version != unicodedata.unidata_version:
        sys.exit(f"Perl's Unicode is {version}, Python's {unicodedata.unidata_version}: "
                 "Alphabetic would not match the other tables")
    cps = set()
    for i in range(0, len(invlist), 2):
        end = invlist[i + 1] if i + 1 < len(invlist) else MAX_CP + 1
        cps.update(range(invlist[i], end))
    return cps


def canonical_mapping(cp):
    """The one-level canonical decomposition mapping of cp (UnicodeData field 5), or None."""
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def full_decomposition(cp):
    m = canonical_mapping(cp)
    if m is None:
        return [cp]
    out = []
    for c in m:
        out.extend(full_decomposition(c))
    return out


def is_word(cp, alpha):
    cat = unicodedata.category(chr(cp))
    return cp in alpha or cat[0] == "M" or cat in ("Nd", "Pc") or cp in (0x200C, 0x200D)


def generate():
    alpha = alphabetic()
    # Alphabetic = L* + Nl + Other_Alphabetic: every letter of Python's data must be in it.
    missing = [cp for cp in range(MAX_CP + 1) if unicodedata.category(chr(cp))[0] == "L"
               and cp not in alpha]
    if missing:
        sys.exit(f"Perl's Alphabetic lacks {len(missing)} letters of Python's data, "
                 f"e.g. U+{missing[0]:04X}")
    props = [0] * (MAX_CP + 1)
    decompositions = {}
    compositions = []
    maybe = set(range(V_BASE, V_BASE + V_COUNT)) | set(range(T_BASE + 1, T_BASE + T_COUNT))
    for cp in range(MAX_CP + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # surrogates never occur in valid UTF-8
        ch = chr(cp)
        p = unicodedata.combining(ch)
        if unicodedata.normalize("NFC", ch) != ch:
            p |= 1 << 8
        if is_word(cp, alpha):
            p |= 1 << 10
        m = canonical_mapping(cp)
        if m is not None:
            p |= 1 << 11
            decompositions[cp] = full_decomposition(cp)
            # A primary composite: a pair mapping whose composite survives NFC.
            if len(m) == 2 and not p & (1 << 8):
                compositions.append((m[0], m[1], cp))
                maybe.add(m[1])
        props[cp] = p
    for cp in maybe:
        props[cp] |= 1 << 9
    compositions.sort()
    return props, decompositions, compositions


def hex_rows(values, per_row, width):
    rows = []
    for i in range(0, len(values), per_row):
        rows.append("    " + " ".join(f"0x{v:0{width}X}," for v in values[i:i + per_row]))
    return "\n".join(rows)


def render(props, decompositions, compositions):
    blocks, index = {}, []
    for start in range(0, MAX_CP + 1, BLOCK):
        block = tuple(props[start:start + BLOCK])
        index.append(blocks.setdefault(block, len(blocks)))
    stage2 = [v for block, _ in sorted(blocks.items(), key=lambda kv: kv[1]) for v in block]
    pool, entries = [], []
    for cp in sorted(decompositions):
        d = decompositions[cp]
        entries.append((cp, len(pool), len(d)))
        pool.extend(d)
    assert len(pool) < 1 << 16 and max(len(d) for d in decompositions.values()) < 256
    out = [
        "// Generated by tools/tokenizer/gen_unicode_tables.py from Python's unicodedata "
        f"(Unicode {unicodedata.unidata_version}); do not edit.",
        "// Included by common/text/unicode.cc only.",
        "",
        f'inline constexpr char kUnicodeVersion[] = "{unicodedata.unidata_version}";',
        f"inline constexpr int kPropsBlockShift = {BLOCK.bit_length() - 1};",
        "",
        "// Per code point: ccc (bits 0-7), NFC_QC=No (8), NFC_QC=Maybe (9), \\w (10),",
        "// has a canonical decomposition (11). kPropsIndex[cp >> shift] picks a block.",
        f"inline constexpr uint16_t kPropsIndex[{len(index)}] = {{",
        hex_rows(index, 12, 4),
        "};",
        f"inline constexpr uint16_t kPropsBlocks[{len(stage2)}] = {{",
        hex_rows(stage2, 12, 4),
        "};",
        "",
        "// Full canonical decompositions (Hangul syllables excepted), sorted by code point.",
        "struct DecompositionEntry {",
        "  uint32_t cp;",
        "  uint16_t offset;  // into kDecompositionPool",
        "  uint8_t length;",
        "};",
        f"inline constexpr DecompositionEntry kDecompositions[{len(entries)}] = {{",
        "\n".join(f"    {{0x{cp:X}, {off}, {n}}}," for cp, off, n in entries),
        "};",
        f"inline constexpr uint32_t kDecompositionPool[{len(pool)}] = {{",
        hex_rows(pool, 8, 5),
        "};",
        "",
        "// Primary composites, sorted by (first, second).",
        "struct CompositionEntry {",
        "  uint32_t first, second, composite;",
        "};",
        f"inline constexpr CompositionEntry kCompositions[{len(compositions)}] = {{",
        "\n".join(f"    {{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for a, b, c in compositions),
        "};",
        "",
    ]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    text = render(*generate())
    out = Path(a.out)
    if a.check:
        current = out.read_text()
        recorded = current.split("(Unicode ", 1)[1].split(")", 1)[0]
        if recorded != unicodedata.unidata_version:
            print(f"SKIP: {out} is Unicode {recorded}, this Python has "
                  f"{unicodedata.unidata_version}")
            return 77
        if current != text:
            print(f"FAIL: {out} differs from what the generator makes now; run "
                  "tools/tokenizer/gen_unicode_tables.py")
            return 1
        print(f"ok {out} is current (Unicode {recorded})")
        return 0
    out.write_text(text)
    print(f"wrote {out} (Unicode {unicodedata.unidata_version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
