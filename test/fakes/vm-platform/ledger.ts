/**
 * The fake platform's record of what happened: an ordered, typed event log
 * and a ledger of resources acquired and not yet released. Tests assert on
 * these, never on time.
 */

export type FakeEvent =
  | { kind: "bridge-ensure"; bridge: string }
  | { kind: "tap-create" | "tap-delete"; tap: string }
  | { kind: "disk-create" | "disk-remove" | "disk-attach" | "disk-detach"; file: string }
  | { kind: "disk-grow"; file: string; sizeBytes: number }
  | { kind: "disk-snapshot"; file: string; to: string }
  | { kind: "snapshot-save" | "restore-start"; vmId: string; dir: string }
  | { kind: "dir-make" | "dir-remove" | "handles-write" | "handles-remove" | "file-remove"; path: string }
  | { kind: "hook-start" | "hook-stop"; hook: string; vmId: string }
  | {
      kind: "boot-start" | "boot-end" | "boot-abort" | "stop-begin" | "pause" | "resume" | "reattach";
      vmId: string;
    }
  | { kind: "vmm-start" | "vmm-stop" | "vmm-kill" | "stray-kill"; vmId: string; pid: number }
  | { kind: "ssh-open" | "ssh-close"; vmId: string }
  | { kind: "banner" | "hostkey-pin"; ip: string }
  | { kind: "exec"; vmId: string; argv: readonly string[] }
  | { kind: "fault" | "cancel"; step: string };

export type FakeEventKind = FakeEvent["kind"];

/** The event of one kind (members of FakeEvent may share a shape across several kinds). */
type EventOf<K extends FakeEventKind> = FakeEvent extends infer E
  ? E extends FakeEvent
    ? K extends E["kind"]
      ? Omit<E, "kind"> & { kind: K }
      : never
    : never
  : never;

type PatternOf<K extends FakeEventKind> = { kind: K } & Partial<Omit<EventOf<K>, "kind">>;

/** An event kind plus any of its fields that must be equal. */
export type EventPattern = { [K in FakeEventKind]: PatternOf<K> }[FakeEventKind];

export function matches(event: FakeEvent, pattern: EventPattern | FakeEventKind): boolean {
  if (typeof pattern === "string") return event.kind === pattern;
  return Object.entries(pattern).every(
    ([key, value]) => JSON.stringify((event as Record<string, unknown>)[key]) === JSON.stringify(value),
  );
}

/** Index of the first event matching `pattern` in `events`, or -1. */
export function indexOf(events: readonly FakeEvent[], pattern: EventPattern | FakeEventKind): number {
  return events.findIndex((event) => matches(event, pattern));
}

/** One line per event, for assertion messages. */
export function describeEvents(events: readonly FakeEvent[]): string {
  return events.map((event) => Object.values(event).join(" ")).join(" | ");
}

/** Whether an event concerns a VM: its id, or a tap, path or file named after it. */
function concerns(event: FakeEvent, vmId: string): boolean {
  if ("vmId" in event) return event.vmId === vmId;
  const subject =
    "tap" in event ? event.tap : "path" in event ? event.path : "file" in event ? event.file : "";
  return subject.includes(vmId.slice(0, 10));
}

export class EventLog {
  readonly #events: FakeEvent[] = [];
  readonly #waiters: { pattern: EventPattern | FakeEventKind; count: number; resolve: () => void }[] = [];

  get all(): readonly FakeEvent[] {
    return this.#events;
  }

  /** The log's length now, to read what comes after with `since`. */
  mark(): number {
    return this.#events.length;
  }

  since(mark: number): FakeEvent[] {
    return this.#events.slice(mark);
  }

  /** Events matching `pattern`, in order. */
  filter<K extends FakeEventKind>(pattern: PatternOf<K> | K): EventOf<K>[] {
    return this.#events.filter((event) =>
      matches(event, pattern as EventPattern | K),
    ) as unknown as EventOf<K>[];
  }

  count(pattern: EventPattern | FakeEventKind): number {
    return this.#events.filter((event) => matches(event, pattern)).length;
  }

  has(pattern: EventPattern | FakeEventKind): boolean {
    return this.count(pattern) > 0;
  }

  /** Events that concern one VM, in order. */
  of(vmId: string): FakeEvent[] {
    return this.#events.filter((event) => concerns(event, vmId));
  }

  /** Resolves once at least `count` events match (already logged ones count). */
  waitFor(pattern: EventPattern | FakeEventKind, count = 1): Promise<void> {
    if (this.count(pattern) >= count) return Promise.resolve();
    return new Promise<void>((resolve) => this.#waiters.push({ pattern, count, resolve }));
  }

  record(event: FakeEvent): void {
    this.#events.push(event);
    for (const waiter of [...this.#waiters]) {
      if (this.count(waiter.pattern) >= waiter.count) {
        this.#waiters.splice(this.#waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }
}

export type ResourceKind = "tap" | "vmm" | "disk" | "attach" | "hook" | "dir" | "handles" | "ssh";

/** One resource held on the fake host; `id` names it (a tap, a path, "vmId pid=N", "hook vmId"). */
export interface HeldResource {
  kind: ResourceKind;
  id: string;
}

/** Resources acquired and not yet released, each acquisition and release also logged as an event. */
export class Ledger {
  readonly #held = new Map<string, HeldResource>();
  readonly #log: EventLog;

  constructor(log: EventLog) {
    this.#log = log;
  }

  acquire(resource: HeldResource, event: FakeEvent): void {
    this.#held.set(key(resource), resource);
    this.#log.record(event);
  }

  release(resource: HeldResource, event: FakeEvent): void {
    this.#held.delete(key(resource));
    this.#log.record(event);
  }

  holds(resource: HeldResource): boolean {
    return this.#held.has(key(resource));
  }

  /** Everything held, sorted by kind then id. */
  held(): HeldResource[] {
    return [...this.#held.values()].sort((a, b) => key(a).localeCompare(key(b)));
  }

  /** What one VM holds: resources whose id names it (its id, or the tap and paths made from it). */
  heldBy(vmId: string): HeldResource[] {
    return this.held().filter((resource) => resource.id.includes(vmId.slice(0, 10)));
  }
}

function key(resource: HeldResource): string {
  return `${resource.kind} ${resource.id}`;
}
