import assert from "node:assert/strict";
import { test } from "node:test";
import { throttledProgress } from "../../src/sys/oci/worker.ts";

test("progress lines: a step's first and last events pass, byte counts in between at most every 100 ms", () => {
  let clock = 0;
  const seen: string[] = [];
  const progress = throttledProgress(
    (event) => seen.push(`${event.step}:${event.current ?? "-"}`),
    () => clock,
  );
  progress({ step: "image.pull.layers", message: "", current: 1, total: 10 });
  clock = 40;
  progress({ step: "image.pull.layers", message: "", current: 2, total: 10 });
  clock = 99;
  progress({ step: "image.pull.layers", message: "", current: 3, total: 10 });
  clock = 100;
  progress({ step: "image.pull.layers", message: "", current: 4, total: 10 });
  clock = 101;
  progress({ step: "image.pull.apply", message: "" });
  clock = 102;
  progress({ step: "image.pull.layers", message: "", current: 5, total: 10 });
  clock = 103;
  progress({ step: "image.pull.layers", message: "", current: 10, total: 10 });
  assert.deepEqual(seen, [
    "image.pull.layers:1",
    "image.pull.layers:4",
    "image.pull.apply:-",
    "image.pull.layers:5",
    "image.pull.layers:10",
  ]);
});
