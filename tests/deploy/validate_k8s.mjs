// Validates rendered Kubernetes manifests offline, two ways:
//  1. the schema of each kind (kubernetes-models; @kubernetes-models/prometheus-operator for
//     PodMonitor/PrometheusRule): types, required fields, enums, formats;
//  2. unknown fields: the schemas allow any extra key, so every document is also written as a
//     TypeScript object literal typed with its kind's interface and checked by tsc, whose
//     excess-property check flags a key the kind does not have, at any depth (`replicaz`,
//     `readinessProbe.grpc.portt`).
//
//   node validate_k8s.mjs NODE_MODULES WORK_DIR FILE.yaml...
// Prints one line per document and exits 1 when any fails.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

const [nodeModules, workDir, ...files] = process.argv.slice(2);
if (!nodeModules || !workDir || files.length === 0) {
  console.error("usage: node validate_k8s.mjs NODE_MODULES WORK_DIR FILE.yaml...");
  process.exit(2);
}
// Bare specifiers resolve from the importing file's directory, so a loader module placed
// beside a node_modules link imports the packages (they are ESM-only: no require()).
fs.mkdirSync(workDir, { recursive: true });
const link = path.join(workDir, "node_modules");
if (!fs.existsSync(link)) fs.symlinkSync(path.resolve(nodeModules), link);
fs.writeFileSync(path.join(workDir, "loader.mjs"), "export const load = (s) => import(s);\n");
const { load: importFrom } = await import(path.resolve(workDir, "loader.mjs"));
const YAML = await importFrom("yaml");

// apiVersion -> module directory of its models.
function modelModule(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const docs = [];
for (const file of files) {
  const text = fs.readFileSync(file, "utf8");
  for (const doc of YAML.parseAllDocuments(text)) {
    if (doc.errors.length) {
      console.log(`FAIL ${file}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
      process.exitCode = 1;
      continue;
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue;
    docs.push({ file, obj, name: `${obj.kind ?? "?"}/${obj.metadata?.name ?? "?"}` });
  }
}

let failed = 0;
const typed = [];
for (const d of docs) {
  const { apiVersion, kind } = d.obj;
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    console.log(`FAIL ${d.name}: no apiVersion/kind`);
    failed++;
    continue;
  }
  const spec = modelModule(apiVersion, kind);
  let Model;
  try {
    Model = (await importFrom(spec))[kind];
  } catch {
    Model = undefined;
  }
  if (!Model) {
    console.log(`FAIL ${d.name}: no schema for ${apiVersion} ${kind} (${spec})`);
    failed++;
    continue;
  }
  try {
    new Model(d.obj).validate();
    d.ok = true;
  } catch (e) {
    const errs = (e.errors ?? [{ instancePath: "", message: e.message }])
      .map((x) => `${x.instancePath || "/"} ${x.message}${x.params?.allowedValues ? " " + JSON.stringify(x.params.allowedValues) : ""}`);
    console.log(`FAIL ${d.name}: schema: ${errs.join("; ")}`);
    failed++;
  }
  typed.push({ d, spec, iface: `I${kind}` });
}

// Unknown-field check: one .ts file, one typed constant per document.
fs.writeFileSync(path.join(workDir, "tsconfig.json"), JSON.stringify({
  compilerOptions: { strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext",
                     skipLibCheck: true, target: "es2022" },
  files: ["manifests.ts"],
}));
const lines = [];
const lineOwner = [];  // line number (1-based) -> document
typed.forEach(({ spec, iface }, i) => lines.push(`import type { ${iface} as T${i} } from "${spec}";`));
typed.forEach(({ d }, i) => {
  const body = `export const doc${i}: T${i} = ${JSON.stringify(d.obj, null, 1)};`.split("\n");
  for (const l of body) {
    lines.push(l);
    lineOwner[lines.length] = d;
  }
});
fs.writeFileSync(path.join(workDir, "manifests.ts"), lines.join("\n") + "\n");
const tsc = path.join(path.resolve(nodeModules), ".bin", "tsc");
let tscOut = "";
try {
  execFileSync(tsc, ["-p", workDir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
} catch (e) {
  tscOut = `${e.stdout ?? ""}${e.stderr ?? ""}`;
  if (!tscOut.trim()) tscOut = `tsc failed: ${e.message}`;
}
for (const line of tscOut.split("\n").filter((l) => l.trim())) {
  const m = line.match(/manifests\.ts\((\d+),\d+\): error (TS\d+): (.*)/);
  const d = m ? lineOwner[Number(m[1])] : undefined;
  console.log(`FAIL ${d ? d.name : "tsc"}: fields: ${m ? `${m[3]} [${m[2]}]` : line}`);
  if (d) d.ok = false;
  failed++;
}

for (const d of docs) if (d.ok) console.log(`ok   ${d.name}`);
console.log(`${docs.length} documents, ${failed} problems`);
process.exit(failed || process.exitCode ? 1 : 0);
