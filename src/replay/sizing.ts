/**
 * Replay batch size under memory pressure. The process's own memory (RSS) is sampled by
 * a schedule; batches shrink toward one entry as RSS nears WAL_MAX_MEMORY_MB and grow back
 * toward WAL_MAX_BATCH_SIZE when it falls.
 */

export interface MemorySample {
  rssBytes: number;
  heapUsedBytes: number;
}

export class BatchSizer {
  current: number;
  peakRssBytes = 0;
  lastSample: MemorySample = { rssBytes: 0, heapUsedBytes: 0 };
  memoryPressureEvents = 0;
  adaptiveBatchReductions = 0;
  private underPressure = false;

  constructor(
    private readonly defaultSize: number,
    private readonly maxSize: number,
    private readonly memoryLimitBytes: number,
  ) {
    this.current = defaultSize;
  }

  /** Feeds one sample; returns the batch size to use from now on. */
  observe(sample: MemorySample): number {
    this.lastSample = sample;
    this.peakRssBytes = Math.max(this.peakRssBytes, sample.rssBytes);
    const usage = sample.rssBytes / this.memoryLimitBytes;
    const before = this.current;
    if (usage >= 0.9) {
      this.current = 1;
    } else if (usage >= 0.7) {
      this.current = Math.max(1, Math.floor(this.current / 2));
    } else if (usage < 0.5) {
      this.current = Math.min(this.maxSize, Math.max(this.current * 2, this.defaultSize));
    }
    const pressure = usage >= 0.7;
    if (pressure && !this.underPressure) this.memoryPressureEvents += 1;
    this.underPressure = pressure;
    if (this.current < before) this.adaptiveBatchReductions += 1;
    return this.current;
  }

  static sampleProcess(): MemorySample {
    const usage = process.memoryUsage();
    return { rssBytes: usage.rss, heapUsedBytes: usage.heapUsed };
  }
}
