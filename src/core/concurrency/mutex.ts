/**
 * An async mutex with FIFO fairness. `run` holds it across the callback,
 * including every await inside it.
 */
export class Mutex {
  #locked = false;
  #waiters: Array<() => void> = [];

  get locked(): boolean {
    return this.#locked;
  }

  /** Number of callers waiting (not counting the holder). */
  get waiting(): number {
    return this.#waiters.length;
  }

  async acquire(): Promise<() => void> {
    if (this.#locked) {
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#locked = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#locked = false;
    };
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

/**
 * A set of mutexes keyed by an id (one per VM). Entries are dropped when no
 * one holds or waits for them, so the set does not grow with deleted VMs.
 */
export class KeyedLocks {
  #locks = new Map<string, { mutex: Mutex; users: number }>();

  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    let entry = this.#locks.get(key);
    if (!entry) {
      entry = { mutex: new Mutex(), users: 0 };
      this.#locks.set(key, entry);
    }
    entry.users += 1;
    try {
      return await entry.mutex.run(fn);
    } finally {
      entry.users -= 1;
      if (entry.users === 0) this.#locks.delete(key);
    }
  }

  isLocked(key: string): boolean {
    return this.#locks.get(key)?.mutex.locked ?? false;
  }

  get size(): number {
    return this.#locks.size;
  }
}
