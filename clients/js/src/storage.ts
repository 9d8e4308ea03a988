// Where the resume position (the last sequence number received) is kept between connections:
// in memory by default, in sessionStorage in browsers (a reload of the tab resumes where it was),
// or anywhere the application likes.

export interface PositionStore {
  get(): number | null;
  set(q: number | null): void;
}

/** Kept in this object: survives reconnects, not a reload of the page or process. */
export function memoryStore(): PositionStore {
  let q: number | null = null;
  return { get: () => q, set: (v) => void (q = v) };
}

interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Kept in a Web Storage object (sessionStorage by default) under `key`. */
export function webStore(key: string, storage?: StorageLike): PositionStore {
  const s = storage || (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
  if (!s) throw new Error('webStore: no sessionStorage here; pass a Storage object or use memoryStore()');
  return {
    get() {
      const v = Number(s.getItem(key));
      return Number.isSafeInteger(v) && v > 0 ? v : null;
    },
    set(q) {
      // A full or forbidden storage (private mode) must not break delivery: memory still has it.
      try {
        if (q === null) s.removeItem(key);
        else s.setItem(key, String(q));
      } catch {
        /* ignored */
      }
    },
  };
}

// sessionStorage can be missing, or throw on access (sandboxed frames).
function session(): StorageLike | null {
  try {
    const s = (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
    if (s) s.getItem('wsgate');
    return s || null;
  } catch {
    return null;
  }
}

/** sessionStorage when the environment has a usable one, memory otherwise. */
export function defaultStore(key: string): PositionStore {
  const s = session();
  return s ? webStore(key, s) : memoryStore();
}

/** Channel positions in sessionStorage under `<prefix><channel>` when usable, else memory. */
export function defaultChannelStore(prefix: string): ChannelStore {
  const s = session();
  return s ? webChannelStore(prefix, s) : memoryChannelStore();
}

/** A channel's position: the last publication received (docs/PROTOCOL.md, "Channels"). */
export interface ChannelPosition {
  offset: number;
  epoch: number;
}

/** Where each channel's position is kept, for recovery after a reconnect or a reload. */
export interface ChannelStore {
  get(channel: string): ChannelPosition | null;
  set(channel: string, p: ChannelPosition | null): void;
}

/** Kept in this object (the default outside browsers). */
export function memoryChannelStore(): ChannelStore {
  const m = new Map<string, ChannelPosition>();
  return {
    get: (ch) => m.get(ch) || null,
    set: (ch, p) => void (p ? m.set(ch, p) : m.delete(ch)),
  };
}

/** Kept in a Web Storage object (sessionStorage by default), one key `<prefix><channel>` each. */
export function webChannelStore(prefix: string, storage?: StorageLike): ChannelStore {
  const s = storage || (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
  if (!s) throw new Error('webChannelStore: no sessionStorage here; pass a Storage object or use memoryChannelStore()');
  return {
    get(ch) {
      try {
        const p = JSON.parse(s.getItem(prefix + ch) || 'null');
        return p && Number.isSafeInteger(p.offset) && Number.isSafeInteger(p.epoch) ? { offset: p.offset, epoch: p.epoch } : null;
      } catch {
        return null;
      }
    },
    set(ch, p) {
      try {
        if (p) s.setItem(prefix + ch, JSON.stringify(p));
        else s.removeItem(prefix + ch);
      } catch {
        /* full or forbidden: recovery degrades to resync, delivery goes on */
      }
    },
  };
}
