// A typed event emitter: one argument per event, listeners called in the order added. A
// listener that throws does not stop the others nor the client: the error goes to `onThrow`.

export type Listener<T> = (event: T) => void;

export class Emitter<Events> {
  private listeners: { [K in keyof Events]?: Listener<Events[K]>[] } = {};

  constructor(private onThrow: (err: unknown) => void) {}

  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void {
    (this.listeners[type] ||= []).push(fn);
    return () => this.off(type, fn);
  }

  /** Adds a listener called once, at the next event of this type. */
  once<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void {
    const off = this.on(type, (ev) => {
      off();
      fn(ev);
    });
    return off;
  }

  off<K extends keyof Events>(type: K, fn: Listener<Events[K]>): void {
    const list = this.listeners[type];
    const i = list ? list.indexOf(fn) : -1;
    if (i >= 0) list!.splice(i, 1);
  }

  protected emit<K extends keyof Events>(type: K, event: Events[K]): void {
    // A copy: a listener may remove itself (once) or others while we iterate.
    for (const fn of (this.listeners[type] || []).slice()) {
      try {
        fn(event);
      } catch (err) {
        this.onThrow(err);
      }
    }
  }
}
