import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROTOCOL_SOURCE, renderAdminDoc } from '../tools/admin-doc.js';
import { ADMIN_COMMANDS, ADMIN_ERROR_CODES, ADMIN_MAX_REQUEST } from '../client/protocol.js';

// One source of truth for the admin protocol: the committed reference must be the rendering of client/protocol.ts.
describe('docs/ADMIN-API.md', { timeout: 60_000 }, () => {
  const doc = renderAdminDoc();

  it('matches client/protocol.ts (regenerate with `make docs`)', () => {
    expect(readFileSync(new URL('../docs/ADMIN-API.md', import.meta.url), 'utf8')).toBe(doc);
  });

  it('documents every command and stream with its arguments and result, every error code, the size limit', () => {
    for (const c of ADMIN_COMMANDS) {
      const at = doc.search(new RegExp(`^#{3,4} ${c}$`, 'm'));
      expect(at, c).toBeGreaterThan(0);
      const section = doc.slice(at, doc.indexOf('\n#', at + 1));
      expect(section, c).toMatch(/Arguments: none\.|\| argument \| type \| required \| meaning \|/);
      expect(section, c).toMatch(/\n(Result|Events): `/);
    }
    for (const code of ADMIN_ERROR_CODES) expect(doc).toMatch(new RegExp(`^\\| \`${code}\` \\| [A-Z\`]`, 'm'));
    expect(doc).toContain(`at most ${ADMIN_MAX_REQUEST} characters`);
    // Arguments are resolved through aliases and intersections, with their doc comments.
    expect(doc).toContain(
      '| `timeoutMs` | `number` | no | How long to wait for the outcome before answering `pending` (ms); default 10000, in [0, 600000]. |',
    );
    expect(doc).toContain('| `value` / `valueBase64` | `string` | one of the two |');
  });
});

describe('tools/admin-doc.ts', { timeout: 60_000 }, () => {
  it('documents a command added in the same style without being told (a new group, its arguments, result type, error code)', () => {
    const src = readFileSync(PROTOCOL_SOURCE(), 'utf8');
    const dir = mkdtempSync(join(tmpdir(), 'spook-admin-doc-'));
    try {
      // The end of the AdminCommands interface: the first closing brace line after its start.
      const open = src.indexOf('export interface AdminCommands {');
      const close = src.indexOf('\n}\n', open);
      const added = (
        src.slice(0, close) +
        `\n  // ---- probe ----\n  /** List keys under a prefix. */\n  listkeys: {\n    args: PairArgs & {\n      /** Keys that start with this. */\n      prefix: string;\n      /** At most this many; default 100. */\n      limit?: number;\n    };\n    result: ListKeysResult;\n  };\n}\n\n/** A page of keys. */\nexport interface ListKeysResult {\n  /** The keys, in order. */\n  keys: string[];\n}\n` +
        src.slice(close + 3)
      )
        .replace(/\n\] as const satisfies/, `\n  'listkeys',\n] as const satisfies`)
        .replace(/\n\] as const;\n/, `\n  /** The feed's position was compacted away. */\n  'probe-compacted',\n] as const;\n`);
      expect(added).not.toBe(src);
      const path = join(dir, 'protocol.ts');
      writeFileSync(path, added);
      const doc = renderAdminDoc(path);
      expect(doc).toContain('- Probe: [`listkeys`](#listkeys)');
      expect(doc).toContain('### Probe commands\n\n#### listkeys\n\nList keys under a prefix.');
      expect(doc).toContain('| `prefix` | `string` | yes | Keys that start with this. |');
      expect(doc).toContain('| `limit` | `number` | no | At most this many; default 100. |');
      expect(doc).toContain('Result: `ListKeysResult` ([ListKeysResult](#listkeysresult)).');
      expect(doc).toContain('### ListKeysResult\n\nA page of keys.');
      expect(doc).toContain("| `probe-compacted` | The feed's position was compacted away. |");
      // Listed in the interface but not in ADMIN_COMMANDS: the generator names it.
      writeFileSync(path, added.replace(`\n  'listkeys',\n`, '\n'));
      expect(() => renderAdminDoc(path)).toThrow(/command listkeys is not in ADMIN_COMMANDS/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
