"""Cross-checks tests/fixtures/chat_templates/*/expected.json (written by
render_expected.cjs with @huggingface/jinja) against Python Jinja2 set up as
transformers sets it up for apply_chat_template: an ImmutableSandboxedEnvironment
with trim_blocks, lstrip_blocks and loop controls, its tojson filter
(ensure_ascii=False) and raise_exception. Debian's python3-jinja2 is enough.

    python3 tools/chat_template_fixtures/check_jinja2.py

Prints each case the two engines disagree on; exits 1 if there is one.
"""
import json, os, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.ext import loopcontrols
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests', 'fixtures', 'chat_templates')
def raise_exception(m): raise Exception(m)
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters['tojson'] = tojson
env.globals['raise_exception'] = raise_exception
convs = {c['name']: c for c in json.load(open(f'{root}/conversations.json'))}
bad = 0
for name in sorted(os.listdir(root)):
    if not os.path.isdir(f'{root}/{name}'): continue
    cfg = json.load(open(f'{root}/{name}/tokenizer_config.json'))
    t = env.from_string(cfg['chat_template'])
    for case in json.load(open(f'{root}/{name}/expected.json'))['cases']:
        c = convs[case['conversation']]
        ctx = dict(messages=c['messages'], add_generation_prompt=case['add_generation_prompt'])
        if 'tools' in c: ctx['tools'] = c['tools']
        for k in ['bos_token','eos_token','unk_token','pad_token']:
            v = cfg.get(k)
            if isinstance(v, dict): v = v.get('content')
            if isinstance(v, str): ctx[k] = v
        try: out = t.render(**ctx); err = None
        except Exception as e: out = None; err = str(e)
        if ('error' in case) != (err is not None) or (out is not None and out != case.get('output')):
            bad += 1
            print('MISMATCH', name, case['conversation'], case['add_generation_prompt'], repr(err)[:200])
            if out is not None and 'output' in case:
                import difflib
                print('  jinja2:', repr(out)[:300]); print('  js    :', repr(case['output'])[:300])
print('mismatches', bad)
sys.exit(1 if bad else 0)
