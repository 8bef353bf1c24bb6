/** The test harness: real Chroma servers, chroma-lb, free ports, waiting, cleanup. */
export * from "./chroma";
export * from "./lb";
export * from "./ports";
export * from "./processes";
export * from "./wait";
