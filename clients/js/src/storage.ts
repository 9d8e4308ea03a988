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

/** sessionStorage when the environment has a usable one, memory otherwise. */
export function defaultStore(key: string): PositionStore {
  try {
    const s = (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
    if (s) {
      s.getItem(key);
      return webStore(key, s);
    }
  } catch {
    /* sessionStorage can throw on access (sandboxed frames) */
  }
  return memoryStore();
}
