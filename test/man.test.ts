import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { configKeys, renderBashCompletion, renderConf, renderSpook, renderSpookd, renderZshCompletion } from '../tools/man.js';

/** spook(8), spookd(8), spookd.conf(5) and the completions: the committed files are what tools/man.ts renders from the command trees. */
const ROOT = join(import.meta.dirname, '..');
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8');

describe('manual pages and completions', () => {
  it('are current (regenerate with `make docs`)', () => {
    expect(read('docs/man/spook.8')).toBe(renderSpook());
    expect(read('docs/man/spookd.8')).toBe(renderSpookd());
    expect(read('docs/man/spookd.conf.5')).toBe(renderConf(read('docs/spookd.conf.example')));
    expect(read('packaging/completion/spook.bash')).toBe(renderBashCompletion());
    expect(read('packaging/completion/_spook')).toBe(renderZshCompletion(renderBashCompletion()));
  });

  it('render without a roff warning, and document every command and option', () => {
    for (const page of ['docs/man/spook.8', 'docs/man/spookd.8', 'docs/man/spookd.conf.5']) {
      const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', join(ROOT, page)], { encoding: 'utf8' });
      expect(r.error, 'groff (man-db) missing').toBeUndefined();
      expect(r.stderr, page).toBe('');
    }
    const spook = read('docs/man/spook.8');
    for (const cmd of ['spook set', 'spook domain member add', 'spook wrap add', 'spook maps dump', 'spook watch'])
      expect(spook).toContain(`.SS "${cmd.replace(/-/g, '\\-')} `);
    expect(spook).toContain('\\-t, \\-\\-timeout <duration>');
    expect(read('docs/man/spookd.8')).toContain('\\-\\-check\\-config');
    // Every top-level key of the schema spookd validates with is in the example the page carries.
    const conf = read('docs/spookd.conf.example');
    expect(configKeys().length).toBeGreaterThan(15);
    for (const k of configKeys()) expect(conf, k).toMatch(new RegExp(`^#?${k}:`, 'm'));
  });

  it('bash completes commands by position and each command its options', () => {
    const complete = (line: string): string[] => {
      const r = spawnSync(
        'bash',
        [
          '-c',
          `source ${join(ROOT, 'packaging/completion/spook.bash')}; read -ra COMP_WORDS <<< "$1"; [[ "$1" == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((\${#COMP_WORDS[@]}-1)); _spook; echo "\${COMPREPLY[*]}"`,
          'complete',
          line,
        ],
        { encoding: 'utf8' },
      );
      expect(r.stderr).toBe('');
      return r.stdout.trim().split(/\s+/).filter(Boolean);
    };
    expect(complete('spook wrap a')).toEqual(['add']);
    expect(complete('spook -s /tmp/x dom')).toEqual(['domains', 'domain']);
    expect(complete('spook domain member ')).toEqual(expect.arrayContaining(['add', 'remove']));
    expect(complete('spook set --')).toEqual(expect.arrayContaining(['--peer', '--timeout', '--socket', '--json']));
    expect(complete('spook wrap add tcp --p')).toEqual(['--port', '--peer']);
  });
});
