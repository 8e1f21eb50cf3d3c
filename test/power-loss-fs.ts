/**
 * A power-loss model of node:fs for the store tests (store-power-loss, domain-power-loss): what was
 * not fsynced is gone. A file holds what it held at its last fsync(2) (nothing, if never fsynced); a
 * directory holds the entries it held at its last fsync (a create, rename or unlink not fsynced into
 * its directory is undone; a directory never fsynced is empty). `tracedFs` wraps node:fs (and
 * `tracedFsPromises` node:fs/promises) so that after every fsync under `model.root` the durable
 * image is taken. The test mocks both modules with them:
 *
 *   const model = await vi.hoisted(async () => (await import('./power-loss-fs.js')).powerLossModel());
 *   vi.mock('node:fs', async (orig) => (await import('./power-loss-fs.js')).tracedFs(await orig(), model));
 *
 * This module must not import node:fs itself: it is loaded inside that mock's factory.
 */
import { join } from 'node:path';
import type * as Fs from 'node:fs';
import type * as FsPromises from 'node:fs/promises';

type Entries = Map<string, { ino: number; dir: boolean }>;

/** One durable image: the names as they are (`live`), the directories' and files' fsynced contents. */
export interface PowerLossImage {
  live: Map<string, Entries>;
  dirs: Map<string, Entries>;
  content: Map<number, Uint8Array>;
}

export const powerLossModel = () => ({
  root: '',
  fdPath: new Map<number, string>(),
  content: new Map<number, Uint8Array>(),
  dirs: new Map<string, Entries>(),
  synced: undefined as ((fd: number) => void) | undefined,
  images: [] as PowerLossImage[],
});
export type PowerLossModel = ReturnType<typeof powerLossModel>;

export function tracedFs(fs: typeof Fs, model: PowerLossModel): typeof Fs & { default: typeof Fs } {
  const under = (p: string): boolean => model.root !== '' && (p === model.root || p.startsWith(`${model.root}/`));
  const entries = (p: string): Entries => {
    const m: Entries = new Map();
    for (const name of fs.readdirSync(p)) {
      const s = fs.lstatSync(`${p}/${name}`);
      m.set(name, { ino: s.ino, dir: s.isDirectory() });
      if (s.isDirectory()) for (const [n, e] of entries(`${p}/${name}`)) m.set(`${name}/${n}`, e);
    }
    return m;
  };
  const synced = (fd: number): void => {
    const p = model.fdPath.get(fd);
    if (p === undefined || !under(p)) return;
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) model.dirs.set(p, new Map([...entries(p)].filter(([n]) => !n.includes('/'))));
    else model.content.set(st.ino, fs.readFileSync(`/proc/self/fd/${fd}`));
    model.images.push({ live: new Map([[model.root, entries(model.root)]]), dirs: new Map(model.dirs), content: new Map(model.content) });
  };
  model.synced = synced;
  const openSync = ((p: string, flags?: string, mode?: number) => {
    const fd = fs.openSync(p, flags as never, mode);
    model.fdPath.set(fd, String(p));
    return fd;
  }) as typeof fs.openSync;
  const fsyncSync = ((fd: number) => {
    fs.fsyncSync(fd);
    synced(fd);
  }) as typeof fs.fsyncSync;
  const fsync = ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) =>
    fs.fsync(fd, (e) => {
      if (!e) synced(fd);
      cb(e);
    })) as typeof fs.fsync;
  const mod = { ...fs, openSync, fsyncSync, fsync };
  return { ...mod, default: mod };
}

export function tracedFsPromises(fsp: typeof FsPromises, model: PowerLossModel): typeof FsPromises & { default: typeof FsPromises } {
  const open = async (p: string, flags?: string, mode?: number) => {
    const fh = await fsp.open(p, flags, mode);
    model.fdPath.set(fh.fd, String(p));
    const sync = fh.sync.bind(fh);
    fh.sync = async () => {
      await sync();
      model.synced?.(fh.fd);
    };
    return fh;
  };
  const mod = { ...fsp, open };
  return { ...mod, default: mod };
}

/** Start the model on an empty, durable directory. */
export function startModel(model: PowerLossModel, root: string): void {
  model.root = root;
  model.fdPath.clear();
  model.content.clear();
  model.dirs.clear();
  model.dirs.set(root, new Map());
  model.images.length = 0;
  model.images.push({ live: new Map([[root, new Map()]]), dirs: new Map(model.dirs), content: new Map() });
}

/**
 * Write image `i` out as a directory tree at `to`: what a power cut right after its fsync leaves.
 * `live`: every create, rename and unlink made so far kept, only the data not fsynced gone (a file
 * system that commits names before data).
 */
export function materialize(fs: typeof Fs, model: PowerLossModel, root: string, i: number, to: string, live = false): void {
  const im = model.images[i];
  if (live) {
    for (const [name, e] of im.live.get(root)!) {
      if (e.dir) fs.mkdirSync(join(to, name), { recursive: true });
      else fs.writeFileSync(join(to, name), im.content.get(e.ino) ?? new Uint8Array(0));
    }
    return;
  }
  const walk = (src: string, dst: string): void => {
    fs.mkdirSync(dst, { recursive: true });
    for (const [name, e] of im.dirs.get(src) ?? []) {
      if (e.dir) walk(`${src}/${name}`, join(dst, name));
      else fs.writeFileSync(join(dst, name), im.content.get(e.ino) ?? new Uint8Array(0));
    }
  };
  walk(root, to);
}
