/**
 * The lists every decision process holds in memory: the store's entries (the fleet's, changed
 * by the admin API) plus the shipped default whitelist, rebuilt when the store's lists version
 * changes. The version is polled every `refreshMs` (default 1 s), so a change made on one
 * process is applied by every process within about a second.
 */
import { type ListEntryValue, Lists } from "./domain/lists";
import type { GreylistStore } from "./store/store";

/** The current lists and their upkeep. */
export class ListsCache {
  private lists: Lists;
  private all: readonly ListEntryValue[];
  private version = -1;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly store: GreylistStore,
    /** Entries that are not in the store (the shipped default whitelist). */
    private readonly builtIn: readonly ListEntryValue[],
    private readonly onError: (error: unknown) => void,
    /** Told when the lists were rebuilt (the store's version changed). */
    private readonly onChange: (lists: Lists) => void = () => {},
    /** Told after every successful refresh, changed or not: entries expire without a new version. */
    private readonly onRefresh: (lists: Lists) => void = () => {},
  ) {
    this.lists = new Lists(builtIn);
    this.all = builtIn;
  }

  /** Every entry the lists were built from (expired ones included). */
  get entries(): readonly ListEntryValue[] {
    return this.all;
  }

  /** The lists in force. */
  get current(): Lists {
    return this.lists;
  }

  /** Loads the store's entries if their version changed; errors keep the lists as they are. */
  async refresh(): Promise<void> {
    try {
      const version = await this.store.listsVersion();
      if (version !== this.version) {
        const entries = await this.store.listEntries();
        this.all = [...this.builtIn, ...entries];
        this.lists = new Lists(this.all);
        this.version = version;
        this.onChange(this.lists);
      }
      this.onRefresh(this.lists);
    } catch (error) {
      this.onError(error);
    }
  }

  /** Refreshes now and then every `refreshMs`. */
  async start(refreshMs: number): Promise<void> {
    await this.refresh();
    const loop = (): void => {
      if (this.stopped) return;
      this.timer = setTimeout(() => void this.refresh().finally(loop), refreshMs);
      this.timer.unref();
    };
    loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
