// Expected ids and decoded texts of the SentencePiece-style fixtures, from
// Hugging Face `tokenizers` itself (npm `tokenizers`, the Rust library's
// binding): writes tests/fixtures/tokenizers/<name>/tokens.json, which
// runtime/text/tokenizer_test.cc compares Arbor's tokenizer against.
// See make_sentencepiece_fixtures.py for how to run it.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Tokenizer } = require('tokenizers');

const root = path.join(__dirname, '..', '..', 'tests', 'fixtures', 'tokenizers');
const texts = [
  'Start with 417. Add 325, multiply by 3, subtract 96. What is the result?',
  'The answer is 2130.',
  'the quick brown fox',
  'Hello world',
  ' leading space',
  'two  spaces   and three',
  'trailing space ',
  'line one\nline two\n\nnew paragraph',
  'tab\tseparated',
  'résumé naïve café',
  'unseen letters: ŷ ŵ ǆ',
  'emoji 🙂 and 🚀 fall back to bytes',
  '中文字符',
  'a<s>b</s> c',
  '<s> after a special token',
  'mixed: x=(12*7)-3; "quoted" [brackets] {braces}',
  '   ',
  'x',
  '417+325=742',
  'Ünïcödé tëxt with accents',
];

async function main() {
  for (const name of fs.readdirSync(root).sort()) {
    const dir = path.join(root, name);
    const tokenizer = Tokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    const cases = [];
    for (const text of texts) {
      for (const add of [true, false]) {
        const encoding = await tokenizer.encode(text, null, { addSpecialTokens: add });
        const ids = encoding.getIds();
        const decoded = await tokenizer.decode(ids, false);
        cases.push({ text, add_special_tokens: add, ids, decoded });
      }
    }
    fs.writeFileSync(path.join(dir, 'tokens.json'), JSON.stringify(cases, null, 1) + '\n');
    console.log(`${name}: ${cases.length} cases`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
