// The official `openai` npm client (pinned in scripts/deps.sh, installed in third_party/npm)
// against a live local cluster with an API key: models list, chat and completions, streaming
// and not, n, logprobs with top_logprobs (checked value for value against `gka generate`
// offline), reasoning_content, tools round trips, and the errors the client raises.
//
//   GKA_BIN_DIR=build/bin node --test tests/integration/openai/openai_client.test.mjs
//
// Skips without GKA_BIN_DIR (ctest sets it).
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const BIN = process.env.GKA_BIN_DIR;
const KEY = "openai-client-test-key";
const MODEL = "gka-tiny";

// ESM import of the copy in third_party/npm, wherever this file is run from.
const require = createRequire(path.join(REPO, "third_party/npm/package.json"));
const { default: OpenAI } = await import(
  pathToFileURL(path.join(path.dirname(require.resolve("openai")), "index.mjs")).href);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Cluster {
  async start() {
    this.dir = mkdtempSync(path.join(tmpdir(), "gka-openai-"));
    const model = path.join(this.dir, "m");
    const made = spawnSync(path.join(BIN, "gka"), ["make-tiny-model", "--out", model]);
    assert.equal(made.status, 0, `make-tiny-model failed: ${made.stderr}`);
    const state = path.join(this.dir, "state");
    this.local = spawn(path.join(BIN, "gka"),
      ["local", "--model", model, "--port", "0", "--metrics-port", "0", "--http-port", "0",
       "--served-model-name", MODEL, "--state-file", state, "--log-dir", this.dir],
      { env: { ...process.env, GKA_API_KEY: KEY }, stdio: "ignore" });
    this.exited = new Promise((resolve) => this.local.on("exit", resolve));
    for (let i = 0; i < 600; i++) {
      if (this.local.exitCode !== null) throw new Error(`gka local exited; logs in ${this.dir}`);
      const lines = existsSync(state)
        ? readFileSync(state, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l)) : [];
      if (lines.length >= 3) {
        this.http = lines.find((l) => l.role === "router").http;
        break;
      }
      await sleep(200);
    }
    assert.ok(this.http, "the cluster did not start");
    for (let i = 0; i < 150; i++) {
      const health = await fetch(`http://${this.http}/health`).catch(() => null);
      if (health?.status === 200) return;
      await sleep(200);
    }
    throw new Error("/health did not turn 200");
  }

  async stop() {
    if (!this.local) return;
    this.local.kill("SIGTERM");
    await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe("openai npm client", { skip: BIN ? false : "GKA_BIN_DIR not set" }, () => {
  const cluster = new Cluster();
  let client;
  const user = (content) => [{ role: "user", content }];

  before(async () => {
    await cluster.start();
    client = new OpenAI({ baseURL: `http://${cluster.http}/v1`, apiKey: KEY, maxRetries: 0 });
  });
  after(async () => cluster.stop());

  test("models.list and models.retrieve name the served model", async () => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL]);
    assert.equal(models.data[0].object, "model");
    const one = await client.models.retrieve(MODEL);
    assert.equal(one.id, MODEL);
  });

  test("chat: non-streaming and streaming agree under greedy sampling", async () => {
    const params = { model: MODEL, messages: user("Say hello."), max_tokens: 12, temperature: 0 };
    const done = await client.chat.completions.create(params);
    assert.equal(done.object, "chat.completion");
    assert.match(done.id, /^chatcmpl-/);
    assert.equal(done.model, MODEL);
    assert.ok(Number.isInteger(done.created));
    assert.equal(done.choices.length, 1);
    const choice = done.choices[0];
    assert.equal(choice.message.role, "assistant");
    assert.equal(typeof choice.message.content, "string");
    assert.ok(["stop", "length"].includes(choice.finish_reason), choice.finish_reason);
    assert.ok(done.usage.prompt_tokens > 0);
    assert.ok(done.usage.completion_tokens > 0 && done.usage.completion_tokens <= 12);
    assert.equal(done.usage.total_tokens, done.usage.prompt_tokens + done.usage.completion_tokens);

    const stream = await client.chat.completions.create(
      { ...params, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let role;
    let finish;
    let usage;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.object, "chat.completion.chunk");
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        text += c.delta.content ?? "";
        finish ??= c.finish_reason ?? undefined;
      }
    }
    assert.ok(chunks >= 3, `only ${chunks} chunks`);
    assert.equal(role, "assistant");
    assert.equal(text, choice.message.content);
    assert.equal(finish, choice.finish_reason);
    assert.deepEqual(usage, done.usage);
  });

  test("completions: text, token ids, n seeded choices, streaming", async () => {
    const done = await client.completions.create(
      { model: MODEL, prompt: "Once upon a time", max_tokens: 6, temperature: 0 });
    assert.equal(done.object, "text_completion");
    assert.match(done.id, /^cmpl-/);
    assert.equal(typeof done.choices[0].text, "string");
    assert.ok(done.usage.completion_tokens > 0);

    const ids = await client.completions.create(
      { model: MODEL, prompt: [9707, 11, 1879], max_tokens: 3, temperature: 0 });
    assert.equal(ids.usage.prompt_tokens, 3);

    const n = await client.completions.create(
      { model: MODEL, prompt: "Pick a word:", max_tokens: 4, n: 3, seed: 11, temperature: 1 });
    assert.deepEqual(n.choices.map((c) => c.index), [0, 1, 2]);
    const again = await client.completions.create(
      { model: MODEL, prompt: "Pick a word:", max_tokens: 4, n: 3, seed: 11, temperature: 1 });
    assert.deepEqual(again.choices.map((c) => c.text), n.choices.map((c) => c.text),
      "seeded sampling must be reproducible");

    const stream = await client.completions.create(
      { model: MODEL, prompt: "Once upon a time", max_tokens: 6, temperature: 0, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    assert.equal(text, done.choices[0].text);
  });

  test("logprobs: the sampled token and its top_logprobs alternatives, streaming or not",
    async () => {
      const params = { model: MODEL, messages: user("hi"), max_tokens: 5, temperature: 0,
        logprobs: true, top_logprobs: 3 };
      const done = await client.chat.completions.create(params);
      const content = done.choices[0].logprobs.content;
      assert.equal(content.length, done.usage.completion_tokens);
      for (const entry of content) {
        assert.equal(typeof entry.token, "string");
        assert.ok(entry.logprob <= 0, `logprob ${entry.logprob}`);
        assert.ok(Array.isArray(entry.bytes));
        assert.equal(entry.top_logprobs.length, 3);
        const lps = entry.top_logprobs.map((t) => t.logprob);
        assert.deepEqual(lps, [...lps].sort((a, b) => b - a), "most likely first");
        // Greedy: the sampled token is the most likely one, with the same logprob.
        assert.equal(entry.top_logprobs[0].token, entry.token);
        assert.equal(entry.top_logprobs[0].logprob, entry.logprob);
        assert.deepEqual(entry.top_logprobs[0].bytes, entry.bytes);
      }
      const stream = await client.chat.completions.create({ ...params, stream: true });
      const streamed = [];
      for await (const chunk of stream) {
        for (const c of chunk.choices) streamed.push(...(c.logprobs?.content ?? []));
      }
      assert.deepEqual(streamed, content);
    });

  test("top_logprobs equal the offline engine's exactly (completions, token ids, seeded)",
    async () => {
      const prompt = [9707, 11, 1879, 0, 374];
      const done = await client.completions.create({
        model: MODEL, prompt, max_tokens: 6, temperature: 0.8, seed: 1234, logprobs: 5,
        ignore_eos: true, prefill_num_iter: 10, decode_num_iter: 10,
        return_tokens_as_token_ids: true });
      const offline = spawnSync(path.join(BIN, "gka"),
        ["generate", "--model", path.join(cluster.dir, "m"), "--prompt-ids", prompt.join(","),
         "--max-tokens", "6", "--temperature", "0.8", "--seed", "1234", "--top-logprobs", "5",
         "--ignore-eos", "--prefill-num-iter", "10", "--decode-num-iter", "10", "--json"],
        { encoding: "utf8" });
      assert.equal(offline.status, 0, offline.stderr);
      const want = JSON.parse(offline.stdout).logprobs;
      const got = done.choices[0].logprobs;
      assert.equal(got.tokens.length, want.length);
      const spell = (id) => `token_id:${id}`;
      assert.deepEqual(got.tokens, want.map((w) => spell(w.token_id)));
      assert.deepEqual(got.token_logprobs, want.map((w) => w.logprob));
      assert.deepEqual(got.top_logprobs,
        want.map((w) => Object.fromEntries(w.top.map((t) => [spell(t.token_id), t.logprob]))));
      // Five alternatives at every position (the vocabulary is far larger).
      assert.ok(want.every((w) => w.top.length === 5));
    });

  test("reasoning: thinking on adds message.reasoning_content, off leaves it out", async () => {
    // The tiny model's random weights never open a <think> block, so its reasoning is null and
    // everything is content; the split itself is covered by openai_protocol_test.
    const params = { model: MODEL, messages: user("Think first."), max_tokens: 6,
      temperature: 0, chat_template_kwargs: { enable_thinking: true } };
    const done = await client.chat.completions.create(params);
    const message = done.choices[0].message;
    assert.ok("reasoning_content" in message, JSON.stringify(message));
    assert.equal(message.reasoning_content, null);
    let text = "";
    for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
      for (const c of chunk.choices) {
        assert.ok(!("reasoning_content" in c.delta), JSON.stringify(c.delta));
        text += c.delta.content ?? "";
      }
    }
    assert.equal(text, message.content);
    const off = await client.chat.completions.create(
      { ...params, chat_template_kwargs: { enable_thinking: false } });
    assert.ok(!("reasoning_content" in off.choices[0].message));
  });

  test("tools: definitions and a tool result go through the chat template", async () => {
    const tools = [{ type: "function", function: { name: "get_weather", description: "Weather",
      parameters: { type: "object", properties: { city: { type: "string" } } } } }];
    const done = await client.chat.completions.create({
      model: MODEL, max_tokens: 4, temperature: 0, tools, tool_choice: "auto",
      messages: [
        { role: "user", content: "Weather in Paris?" },
        { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function",
          function: { name: "get_weather", arguments: '{"city": "Paris"}' } }] },
        { role: "tool", tool_call_id: "call_1", content: "18 C and sunny" }] });
    assert.equal(done.object, "chat.completion");
    // The tool turn is part of the prompt: far longer than the user question alone.
    const plain = await client.chat.completions.create(
      { model: MODEL, max_tokens: 1, messages: user("Weather in Paris?") });
    assert.ok(done.usage.prompt_tokens > plain.usage.prompt_tokens + 40,
      `${done.usage.prompt_tokens} vs ${plain.usage.prompt_tokens}`);
  });

  test("errors: the client raises the matching error classes", async () => {
    const wrongKey = new OpenAI({ baseURL: `http://${cluster.http}/v1`, apiKey: "wrong",
      maxRetries: 0 });
    await assert.rejects(wrongKey.models.list(), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
      assert.equal(e.status, 401);
      return true;
    });
    await assert.rejects(
      client.chat.completions.create({ model: "gpt-4o", messages: user("hi") }), (e) => {
        assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
        assert.equal(e.code, "model_not_found");
        return true;
      });
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: user("hi"), temperature: -1 }),
      (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
        assert.equal(e.status, 400);
        assert.equal(e.param, "temperature");
        assert.equal(e.type, "invalid_request_error");
        return true;
      });
    // A streaming request that is refused fails before the stream, with its status.
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: user("hi"), stream: true,
        response_format: { type: "json_object" } }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "response_format");
    await assert.rejects(
      client.completions.create({ model: MODEL, prompt: "hi", max_tokens: 100000 }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === "max_tokens");
  });
});
