// Reads a `gka bench serve --save-requests` result and prints one line for the chaos table:
//   sent ok retryable hung other expected output_tokens_per_s
//   node classify.js RESULT.json TIMEOUT_S
// retryable: UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED (common/rpc IsRetryable: the client may
// send the request again). hung: the client's own deadline fired (DEADLINE_EXCEEDED after at
// least 95 % of TIMEOUT_S): the server neither answered nor failed the request in time.
// other: any other error (a test failure unless the scenario expects that code).
// With a third argument CODE, requests ending with CODE count as `expected`, not `other`
// (transfer faults: a corrupted transfer must end DATA_LOSS, never OK).
const fs = require("fs");
const [file, timeoutS, expected] = process.argv.slice(2);
const result = JSON.parse(fs.readFileSync(file, "utf8"));
const records = result.requests;
if (!records) throw new Error(`${file}: no per-request records (run with --save-requests)`);
const retryable = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"]);
let ok = 0, retry = 0, hung = 0, other = 0, exp = 0;
const examples = {};
for (const r of records) {
  const e2eS = (r.done_ms - r.sent_ms) / 1000;
  if (r.code === "OK") ok++;
  else if (r.code === "DEADLINE_EXCEEDED" && e2eS >= 0.95 * Number(timeoutS)) hung++;
  else if (expected && r.code === expected) exp++;
  else if (retryable.has(r.code)) retry++;
  else other++;
  if (r.code !== "OK") examples[r.code] = examples[r.code] || r.error;
}
const overall = (result.report && result.report.overall) || {};
const tokS = overall.output_token_throughput || 0;
console.log([records.length, ok, retry, hung, other, exp, tokS.toFixed(1)].join(" "));
if (Object.keys(examples).length) console.error(`   ${file}: ${JSON.stringify(examples)}`);
