/**
 * Renders docs/ADMIN-API.md from client/protocol.ts, so the admin protocol has one source of
 * truth: the commands of AdminCommands and AdminStreams with their arguments (resolved by the
 * TypeScript checker, each with its doc comment: meaning, default, limits), results and events;
 * ADMIN_ERROR_CODES with their doc comments; every other type the file declares. A command added
 * in the same style (a member of AdminCommands or AdminStreams, a `// ---- part ----` line before
 * a group) is documented without touching this file. `make docs` writes it; a test fails when the
 * committed file and this rendering differ.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { ADMIN_MAX_REQUEST } from '../client/protocol.js';

/** The repository: this file is tools/admin-doc.ts, or dist/tools/admin-doc.js once built. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'client', 'protocol.ts'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('client/protocol.ts not found above tools/admin-doc');
    dir = up;
  }
  return dir;
}

export const PROTOCOL_SOURCE = (): string => join(repoRoot(), 'client', 'protocol.ts');

/** The declarations of protocol.ts rendered elsewhere (framing) or not at all (type machinery). */
const MACHINERY = new Set([
  'AdminCommands',
  'AdminStreams',
  'AdminCommand',
  'AdminStream',
  'AdminArgs',
  'AdminResult',
  'AdminRequestArgs',
  'AllCommandsListed',
  'Listed',
  'AdminErrorCode',
  'AdminResponse',
  'AdminEventLine',
  'AdminErrorBody',
  'Bytes',
  'PairArgs',
  'WriteArgs',
]);

/** The comments before a node: its doc comment (the last `/** … *\/`), and the group a `// ---- name ----` line opens. */
function commentsOf(src: ts.SourceFile, node: ts.Node): { doc: string; group?: string } {
  const text = src.getFullText();
  let doc = '';
  let group: string | undefined;
  for (const r of ts.getLeadingCommentRanges(text, node.getFullStart()) ?? []) {
    const c = text.slice(r.pos, r.end);
    const g = /^\/\/\s*-{2,}\s*(.+?)\s*-{2,}\s*$/.exec(c);
    if (g) group = g[1];
    else if (c.startsWith('/**')) doc = jsdocText(c);
  }
  return { doc, ...(group !== undefined ? { group } : {}) };
}

/** A `/** … *\/` comment as one paragraph of Markdown. */
function jsdocText(c: string): string {
  return c
    .replace(/^\/\*\*/, '')
    .replace(/\*\/$/, '')
    .split('\n')
    .map((l) => l.replace(/^\s*\*\s?/, '').trim())
    .filter((l) => l !== '')
    .join(' ');
}

const printer = ts.createPrinter({ removeComments: true });
/** A type as one line of TypeScript, comments dropped. */
function oneLine(src: ts.SourceFile, node: ts.Node): string {
  return printer.printNode(ts.EmitHint.Unspecified, node, src).replace(/\s+/g, ' ').replace(/; }/g, ' }');
}
/** Inline code in a table cell: a `|` would end the cell. */
const code = (s: string): string => `\`${s.replace(/\|/g, '\\|')}\``;
const cell = (s: string): string => s.replace(/\|/g, '\\|') || ' ';

interface Member {
  name: string;
  doc: string;
  group?: string;
  /** The member's type literal: `{ args: …; result: … }` or `{ args: …; event: … }`. */
  parts: Map<string, ts.TypeNode>;
}

function membersOf(src: ts.SourceFile, decl: ts.InterfaceDeclaration): Member[] {
  return decl.members.filter(ts.isPropertySignature).map((m) => {
    const name = ts.isStringLiteral(m.name) || ts.isIdentifier(m.name) ? m.name.text : m.name.getText(src);
    const parts = new Map<string, ts.TypeNode>();
    if (m.type && ts.isTypeLiteralNode(m.type))
      for (const p of m.type.members) if (ts.isPropertySignature(p) && p.type) parts.set(p.name.getText(src), p.type);
    return { name, ...commentsOf(src, m), parts };
  });
}

/** The arguments of a command, resolved through aliases and intersections: a table, or "none". */
function argsTable(checker: ts.TypeChecker, node: ts.TypeNode | undefined): string[] {
  if (!node) return ['Arguments: none.'];
  const type = checker.getTypeFromTypeNode(node);
  const props = checker.getPropertiesOfType(type);
  if (props.length === 0) return ['Arguments: none.'];
  const names = new Set(props.map((p) => p.name));
  const rows = ['| argument | type | required | meaning |', '|---|---|---|---|'];
  for (const p of props) {
    // Bytes<'key'>: `key` (UTF-8 text) or `keyBase64`, one row for the pair.
    if (p.name.endsWith('Base64') && names.has(p.name.slice(0, -'Base64'.length))) continue;
    const bytes = names.has(`${p.name}Base64`);
    const optional = (p.flags & ts.SymbolFlags.Optional) !== 0;
    const t = checker.typeToString(checker.getTypeOfSymbol(p), undefined, ts.TypeFormatFlags.NoTruncation).replace(/ \| undefined$/, '');
    let doc = ts.displayPartsToString(p.getDocumentationComment(checker)).replace(/\s+/g, ' ');
    if (bytes) doc = `${doc ? `${doc} ` : ''}Bytes: UTF-8 text, or base64 as \`${p.name}Base64\`.`;
    const name = bytes ? `${code(p.name)} / ${code(`${p.name}Base64`)}` : code(p.name);
    rows.push(`| ${name} | ${code(bytes ? 'string' : t)} | ${bytes ? 'one of the two' : optional ? 'no' : 'yes'} | ${cell(doc)} |`);
  }
  return rows;
}

/** The declared types a type refers to, as links to their sections. */
function links(node: ts.TypeNode, declared: Set<string>): string {
  const found: string[] = [];
  const visit = (n: ts.Node): void => {
    if (ts.isTypeReferenceNode(n) && ts.isIdentifier(n.typeName) && declared.has(n.typeName.text) && !found.includes(n.typeName.text))
      found.push(n.typeName.text);
    n.forEachChild(visit);
  };
  visit(node);
  return found.length ? ` (${found.map((t) => `[${t}](#${t.toLowerCase()})`).join(', ')})` : '';
}

function typeSection(src: ts.SourceFile, d: ts.InterfaceDeclaration | ts.TypeAliasDeclaration, declared: Set<string>): string[] {
  const name = d.name.text;
  const { doc } = commentsOf(src, d);
  const out = [`### ${name}`, ''];
  if (doc) out.push(doc, '');
  if (ts.isTypeAliasDeclaration(d)) {
    out.push('```ts', d.getText(src).replace(/^export /, ''), '```', '');
    return out;
  }
  const ext = d.heritageClauses?.flatMap((h) => h.types.map((t) => t.getText(src))) ?? [];
  if (ext.length) out.push(`Has every field of ${ext.map((t) => code(t)).join(', ')}, and:`, '');
  out.push('| field | type | meaning |', '|---|---|---|');
  for (const m of d.members) {
    if (!ts.isPropertySignature(m) || !m.type) continue;
    const opt = m.questionToken ? '?' : '';
    out.push(
      `| ${code(m.name.getText(src) + opt)} | ${code(oneLine(src, m.type))}${links(m.type, declared)} | ${cell(commentsOf(src, m).doc)} |`,
    );
  }
  out.push('');
  return out;
}

/** The string elements of an `as const` array, each with its doc comment and group. */
function constList(src: ts.SourceFile, name: string): { value: string; doc: string; group?: string }[] {
  for (const st of src.statements) {
    if (!ts.isVariableStatement(st)) continue;
    for (const v of st.declarationList.declarations) {
      if (!ts.isIdentifier(v.name) || v.name.text !== name || !v.initializer) continue;
      let init: ts.Expression = v.initializer;
      while (ts.isAsExpression(init) || ts.isSatisfiesExpression(init)) init = init.expression;
      if (!ts.isArrayLiteralExpression(init)) throw new Error(`${name} is not an array literal`);
      return init.elements.filter(ts.isStringLiteral).map((e) => ({ value: e.text, ...commentsOf(src, e) }));
    }
  }
  throw new Error(`${name} not found in client/protocol.ts`);
}

/** ADMIN_ERROR_CODES as protocol.ts declares them, each with its doc comment (client-side codes say so first). */
export function errorCodeDocs(path = PROTOCOL_SOURCE()): { value: string; doc: string }[] {
  const src = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.ES2022, true);
  return constList(src, 'ADMIN_ERROR_CODES');
}

const INTRO = (maxRequest: number): string[] => [
  '# The spookd admin protocol',
  '',
  '<!-- Generated by tools/admin-doc.ts from client/protocol.ts: do not edit; `make docs` rewrites it (a test fails when it is stale). -->',
  '',
  'For application and tool authors who talk to `spookd` without the TypeScript library (`openRegister`,',
  '`AdminClient`: docs/LIBRARY.md), or who want to know exactly what the library sends. `client/protocol.ts`',
  'is the one definition, shared by the daemon, the library, the CLI and the tests; this page is rendered',
  'from it.',
  '',
  '## Wire',
  '',
  '- **Transport**: a Unix stream socket, `adminSocket` in spookd.conf (default `/run/spook/admin.sock`),',
  '  never on the network. Whoever can open it can do everything listed here (docs/SECURITY.md).',
  '- **Framing**: JSON lines: one JSON object per line, UTF-8, ended by `\\n`, both ways. Several',
  "  requests may be in flight on one connection; answers carry the request's `id` and may come in any order.",
  `- **Size limit**: a request line is at most ${maxRequest} characters (\`ADMIN_MAX_REQUEST\`, newline`,
  '  excluded). A longer line is answered `{"id":0,"ok":false,"error":{"code":"request-too-large",…}}`',
  '  and the connection is closed; the library refuses such a request before sending it.',
  '',
  '| line | form |',
  '|---|---|',
  '| request | `{"id":1,"cmd":"set","args":{"register":"config","key":"k","value":"v"}}` (`id`: a number chosen by the client; `args` may be omitted when empty) |',
  '| success | `{"id":1,"ok":true,"result":…}` |',
  '| failure | `{"id":1,"ok":false,"error":{"code":"bad-argument","message":"argument timeoutMs must be an integer in [0, 600000]","field":"timeoutMs"}}` |',
  '| stream start | `{"id":1,"ok":true,"result":"streaming"}` |',
  '| stream event | `{"id":1,"peer":"db-2","event":{…}}`, until the client closes the connection |',
  '| stream end | `{"id":1,"ok":false,"error":{"code":"peer-removed",…}}`: spookd ended the stream (its peer removed by a reload); its last line |',
  '',
  'A line that is not JSON, or lacks a numeric `id` and a string `cmd`, is answered with `id` 0 and',
  "code `bad-request`. A failure's `field` names the argument at fault (`ops[2].expect` inside a list);",
  'it is absent when no argument is. A client branches on `code` and shows `message` to people.',
  '',
  '## Conventions',
  '',
  '- **Bytes** (keys, values, stream data) are sent as `name` (UTF-8 text) or `nameBase64` (base64), and',
  '  come back as `{"base64":…,"text"?:…}` (ShownBytes): `base64` always, `text` only when the bytes are',
  "  printable UTF-8. In the types below, `Bytes<'key'>` stands for these two optional fields.",
  '- **Time**: one clock. Every instant (`at`, `since`, `…At`) is wall-clock milliseconds since the Unix',
  "  epoch, an integer (spookd's monotonic clock anchored to the wall clock at its start, so instants never",
  '  go backwards); every duration (`…Ms`) is milliseconds.',
  "- **Verdicts** are strings everywhere: `committed`, `rejected` (with `reason`, the rejection's name),",
  '  `pending` (not decided within the wait; it will still be decided), and for domains `unknown`.',
  '- **Versioning**: add, never rename. New commands, arguments, result fields, events and error codes',
  '  are added; none is renamed or removed, and an argument added later is optional. A client ignores',
  '  fields it does not know and treats an unknown error code as a failure (its `message` says what).',
  '',
];

export function renderAdminDoc(path = PROTOCOL_SOURCE()): string {
  const program = ts.createProgram([path], { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022, types: [] });
  const src = program.getSourceFile(path);
  if (!src) throw new Error(`cannot read ${path}`);
  const checker = program.getTypeChecker();
  const ifaces = new Map<string, ts.InterfaceDeclaration>();
  const declared: (ts.InterfaceDeclaration | ts.TypeAliasDeclaration)[] = [];
  for (const st of src.statements) {
    if (ts.isInterfaceDeclaration(st)) ifaces.set(st.name.text, st);
    if ((ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st)) && !MACHINERY.has(st.name.text)) declared.push(st);
  }
  const names = new Set(declared.map((d) => d.name.text));
  const need = (n: string): ts.InterfaceDeclaration => {
    const d = ifaces.get(n);
    if (!d) throw new Error(`interface ${n} not found in client/protocol.ts`);
    return d;
  };
  const commands = membersOf(src, need('AdminCommands'));
  const streams = membersOf(src, need('AdminStreams'));
  // The two maps and the list agree (the compiler checks it too; this names the command at fault).
  const listed = new Set(constList(src, 'ADMIN_COMMANDS').map((c) => c.value));
  const members = new Set([...commands, ...streams].map((c) => c.name));
  for (const c of members) if (!listed.has(c)) throw new Error(`command ${c} is not in ADMIN_COMMANDS (client/protocol.ts)`);
  for (const c of listed) if (!members.has(c)) throw new Error(`ADMIN_COMMANDS lists ${c}, which AdminCommands and AdminStreams lack`);

  const out = INTRO(ADMIN_MAX_REQUEST);
  out.push('## Commands', '');
  out.push(
    'Each answers one response. A write (`set`, `del`, `cas`, `append`, `dpropose`) waits for its outcome up to',
    'its `timeoutMs` and then answers `pending`: that is a result, not an error.',
    '',
  );
  const title = (g: string): string => `${g[0].toUpperCase()}${g.slice(1)}`;
  // The index: one line per group (a `// ---- name ----` line in AdminCommands opens one).
  const groups: { name: string | undefined; members: Member[] }[] = [];
  for (const c of commands) {
    const last = groups.at(-1);
    if (!last || (c.group !== undefined && c.group !== last.name)) groups.push({ name: c.group, members: [c] });
    else last.members.push(c);
  }
  for (const g of groups)
    out.push(`- ${g.name !== undefined ? `${title(g.name)}: ` : ''}${g.members.map((m) => `[\`${m.name}\`](#${m.name})`).join(', ')}`);
  out.push(`- Streams: ${streams.map((m) => `[\`${m.name}\`](#${m.name})`).join(', ')}`, '');
  for (const g of groups) {
    if (g.name !== undefined) out.push(`### ${title(g.name)} commands`, '');
    for (const c of g.members) {
      out.push(`#### ${c.name}`, '');
      if (c.doc) out.push(c.doc, '');
      out.push(...argsTable(checker, c.parts.get('args')), '');
      const result = c.parts.get('result');
      if (result) out.push(`Result: ${code(oneLine(src, result))}${links(result, names)}.`, '');
    }
  }

  out.push('## Streams', '');
  out.push(
    'A stream answers `"streaming"` once its arguments are checked (or a failure, as a command does), then sends',
    'one line per event until the client closes the connection; spookd closing it (it stopped) ends the stream.',
    'A stream bound to a peer (`feed` on its register, `watch` or `events` naming it) that a reload removes ends',
    'with one failure line of its id, code `peer-removed`, and nothing after it; the connection stays open.',
    'On the wire the event\'s `peer` travels beside it (`{"id":1,"peer":"b","event":{…}}`); the types below show it',
    'inside the event, as the library delivers it. A client that stops reading is disconnected once 8 MiB wait for it.',
    '',
  );
  for (const s of streams) {
    out.push(`### ${s.name}`, '');
    if (s.doc) out.push(s.doc, '');
    out.push(...argsTable(checker, s.parts.get('args')), '');
    const ev = s.parts.get('event');
    if (ev) out.push(`Events: ${code(oneLine(src, ev))}${links(ev, names)}.`, '');
  }

  out.push('## Error codes', '');
  out.push(
    'The closed set `ADMIN_ERROR_CODES`. Codes marked client side are never sent by spookd: the library raises them.',
    '',
    '| code | meaning |',
    '|---|---|',
  );
  for (const e of constList(src, 'ADMIN_ERROR_CODES')) out.push(`| ${code(e.value)} | ${cell(e.doc)} |`);
  out.push('');

  out.push('## Types', '');
  out.push('The results and events above, as `client/protocol.ts` declares them (`?`: the field may be absent).', '');
  for (const d of declared) out.push(...typeSection(src, d, names));
  return `${out.join('\n').trimEnd()}\n`;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const target = process.argv[2] ?? join(repoRoot(), 'docs', 'ADMIN-API.md');
  writeFileSync(target, renderAdminDoc());
}
