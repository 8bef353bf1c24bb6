/**
 * Replay batch size under memory pressure: shrink near the limit, grow back when memory
 * falls, and count each crossing into pressure once.
 */
import { describe, expect, test } from "bun:test";
import { BatchSizer } from "../../src/replay/sizing";

const MB = 1024 * 1024;
const limitBytes = 400 * MB;
/** A sample at `fraction` of the memory limit. */
const at = (fraction: number) => ({ rssBytes: Math.round(limitBytes * fraction), heapUsedBytes: 10 * MB });

const figures = (s: BatchSizer) => ({
  current: s.current,
  memoryPressureEvents: s.memoryPressureEvents,
  adaptiveBatchReductions: s.adaptiveBatchReductions,
});

describe("BatchSizer", () => {
  test("starts at the default size", () => {
    expect(figures(new BatchSizer(50, 200, limitBytes))).toEqual({ current: 50, memoryPressureEvents: 0, adaptiveBatchReductions: 0 });
  });

  test("shrinks to 1 at 90% of the limit and above", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    expect(sizer.observe(at(0.9))).toBe(1);
    expect(figures(sizer)).toEqual({ current: 1, memoryPressureEvents: 1, adaptiveBatchReductions: 1 });
    expect(sizer.observe(at(1.5))).toBe(1);
    // Still the same crossing, and the size did not fall further.
    expect(figures(sizer)).toEqual({ current: 1, memoryPressureEvents: 1, adaptiveBatchReductions: 1 });
  });

  test("halves on each sample between 70% and 90%", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    expect([0.7, 0.8, 0.89, 0.75].map((f) => sizer.observe(at(f)))).toEqual([25, 12, 6, 3]);
    expect(figures(sizer)).toEqual({ current: 3, memoryPressureEvents: 1, adaptiveBatchReductions: 4 });
    expect([sizer.observe(at(0.8)), sizer.observe(at(0.8)), sizer.observe(at(0.8))]).toEqual([1, 1, 1]);
    // Halving 3 gives 1 once; staying at 1 is no further reduction.
    expect(figures(sizer)).toEqual({ current: 1, memoryPressureEvents: 1, adaptiveBatchReductions: 5 });
  });

  test("holds its size between 50% and 70%", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    sizer.observe(at(0.75));
    expect([0.5, 0.6, 0.69].map((f) => sizer.observe(at(f)))).toEqual([25, 25, 25]);
    expect(figures(sizer)).toEqual({ current: 25, memoryPressureEvents: 1, adaptiveBatchReductions: 1 });
  });

  test("grows back below 50%: to the default at once, then doubling up to the maximum", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    sizer.observe(at(0.95));
    expect([0.3, 0.3, 0.3, 0.3].map((f) => sizer.observe(at(f)))).toEqual([50, 100, 200, 200]);
    expect(figures(sizer)).toEqual({ current: 200, memoryPressureEvents: 1, adaptiveBatchReductions: 1 });
  });

  test("counts a pressure event once per crossing into 70% and above", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    for (const f of [0.2, 0.72, 0.95, 0.8, 0.6, 0.4, 0.71, 0.71, 0.3, 0.92]) sizer.observe(at(f));
    expect(sizer.memoryPressureEvents).toBe(3);
  });

  test("keeps the last sample and the peak", () => {
    const sizer = new BatchSizer(50, 200, limitBytes);
    for (const f of [0.2, 0.6, 0.3]) sizer.observe(at(f));
    expect({ last: sizer.lastSample, peak: sizer.peakRssBytes }).toEqual({ last: at(0.3), peak: at(0.6).rssBytes });
  });

  test("samples the real process", () => {
    const sample = BatchSizer.sampleProcess();
    expect(sample.rssBytes).toBeGreaterThan(0);
    expect(sample.heapUsedBytes).toBeGreaterThan(0);
  });
});
