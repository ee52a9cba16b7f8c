// gka generate (offline) and gka chat: the engine in this process, text through common/text.
//
//   gka generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens 256]
//                [--temperature T --top-k K --top-p P --min-p M --seed S
//                 --repetition-penalty R --presence-penalty P --frequency-penalty F]
//                [--prefill-num-iter N] [--decode-num-iter N] [--ignore-eos] [--json]
//                [--logprobs] [--top-logprobs K]
//   gka chat --model DIR [--system TEXT] [--enable-thinking] "message"
//
// With --json, stdout is exactly one object {"token_ids": [...], "text": ..., "finish_reason":
// ...}; logs go to stderr. Without a tokenizer in DIR, only --prompt-ids works and "text" is
// absent. --logprobs (offline, with --json) adds "logprobs": [{"token_id", "logprob", "top":
// [{"token_id", "logprob"}, ...]}] per token, with --top-logprobs K alternatives each: the
// reference the OpenAI gateway's logprobs are checked against.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/commands.h"
#if GKA_WITH_GRPC
#include "cli/client_commands.h"
#endif
#include "cli/engine_setup.h"
#include "cli/offline_generate.h"
#include "common/base/logging.h"
#include "common/base/status.h"
#include "common/text/chat_template.h"
#include "common/text/incremental_detokenizer.h"
#include "common/text/tokenizer.h"

namespace gka::cli {
namespace {

struct SamplingFlags {
  std::optional<float> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<int32_t> top_k;
  uint64_t seed = 0;
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

struct GenerateFlags {
  EngineFlags engine;
  std::string prompt;
  std::string prompt_ids;
  std::string system;
  std::string message;
  int32_t max_tokens = 256;
  SamplingFlags sampling;
  int32_t prefill_num_iter = -1;
  int32_t decode_num_iter = -1;
  bool ignore_eos = false;
  bool json = false;
  bool enable_thinking = false;
  std::string addr;  // a router: run through the cluster instead of a local engine
  TlsFlags tls;      // with addr
  std::string tier;
};

void AddSamplingFlags(CLI::App& cmd, GenerateFlags& f) {
  cmd.add_option("--max-tokens", f.max_tokens, "tokens to generate at most")->capture_default_str();
  cmd.add_option("--temperature", f.sampling.temperature, "0 = greedy (default: checkpoint's)");
  cmd.add_option("--top-k", f.sampling.top_k, "0 = off");
  cmd.add_option("--top-p", f.sampling.top_p, "nucleus mass in (0, 1]");
  cmd.add_option("--min-p", f.sampling.min_p, "drop tokens below min_p * max prob");
  cmd.add_option("--repetition-penalty", f.sampling.repetition_penalty, "HF-style, > 0");
  cmd.add_option("--presence-penalty", f.sampling.presence_penalty, "OpenAI-style");
  cmd.add_option("--frequency-penalty", f.sampling.frequency_penalty, "OpenAI-style");
  cmd.add_option("--seed", f.sampling.seed, "sampling seed")->capture_default_str();
  cmd.add_flag("--logprobs", f.sampling.logprobs, "report each token's logprob (offline, --json)");
  cmd.add_option("--top-logprobs", f.sampling.top_logprobs,
                 "and this many most likely alternatives (0..20; implies --logprobs)");
  cmd.add_option("--prefill-num-iter", f.prefill_num_iter, "GKA num_iter for the prompt");
  cmd.add_option("--decode-num-iter", f.decode_num_iter, "GKA num_iter for generated tokens");
  cmd.add_flag("--ignore-eos", f.ignore_eos, "keep generating past end-of-sequence");
  cmd.add_option("--addr", f.addr, "router HOST:PORT: run through the cluster, not a local engine");
  cmd.add_option("--tier", f.tier, "traffic tier (with --addr)");
  AddTlsFlags(cmd, f.tls);
}

absl::StatusOr<kernels::SamplingConfig> Sampling(const SamplingFlags& f,
                                                 const model::GenerationDefaults& defaults) {
  kernels::SamplingConfig s = DefaultSampling(defaults);
  if (f.temperature) s.temperature = *f.temperature;
  if (f.top_k) s.top_k = *f.top_k;
  if (f.top_p) s.top_p = *f.top_p;
  if (f.min_p) s.min_p = *f.min_p;
  if (f.repetition_penalty) s.repetition_penalty = *f.repetition_penalty;
  if (f.presence_penalty) s.presence_penalty = *f.presence_penalty;
  if (f.frequency_penalty) s.frequency_penalty = *f.frequency_penalty;
  s.seed = f.seed;
  if (f.top_logprobs < 0 || f.top_logprobs > kernels::kMaxTopLogprobs) {
    return absl::InvalidArgumentError(
        absl::StrCat("--top-logprobs must be in [0, ", kernels::kMaxTopLogprobs, "]"));
  }
  s.num_top_logprobs = f.top_logprobs;
  if (s.temperature < 0) return absl::InvalidArgumentError("--temperature must be >= 0");
  if (!(s.top_p > 0 && s.top_p <= 1))
    return absl::InvalidArgumentError("--top-p must be in (0, 1]");
  if (s.top_k < 0) return absl::InvalidArgumentError("--top-k must be >= 0");
  if (s.min_p < 0 || s.min_p > 1) return absl::InvalidArgumentError("--min-p must be in [0, 1]");
  if (s.repetition_penalty <= 0) {
    return absl::InvalidArgumentError("--repetition-penalty must be > 0");
  }
  return s;
}

absl::StatusOr<std::vector<int32_t>> ParseIds(absl::string_view csv) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(csv, ',', absl::SkipWhitespace())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--prompt-ids: '", part, "' is not an id"));
    }
    ids.push_back(id);
  }
  return ids;
}

// The model directory's tokenizer, or null when it has none.
absl::StatusOr<std::unique_ptr<text::Tokenizer>> TokenizerOf(const std::string& dir) {
  if (!std::ifstream(dir + "/tokenizer.json").good()) return nullptr;
  return text::Tokenizer::FromFile(dir);
}

absl::Status RunViaRouter(const GenerateFlags& f, bool chat) {
  if (f.sampling.logprobs || f.sampling.top_logprobs > 0) {
    return absl::InvalidArgumentError(
        "--logprobs / --top-logprobs are for the offline engine (--model); through a router use "
        "the SDKs or the OpenAI API");
  }
#if GKA_WITH_GRPC
  RemoteGenerateRequest r{.addr = f.addr,
                          .tls = f.tls,
                          .chat = chat,
                          .prompt = f.prompt,
                          .system = f.system,
                          .message = f.message,
                          .enable_thinking = f.enable_thinking,
                          .tier = f.tier,
                          .max_tokens = f.max_tokens};
  if (!f.prompt_ids.empty()) {
    GKA_ASSIGN_OR_RETURN(r.prompt_ids, ParseIds(f.prompt_ids));
  }
  r.temperature = f.sampling.temperature;
  r.top_k = f.sampling.top_k;
  r.top_p = f.sampling.top_p;
  r.min_p = f.sampling.min_p;
  r.repetition_penalty = f.sampling.repetition_penalty;
  r.presence_penalty = f.sampling.presence_penalty;
  r.frequency_penalty = f.sampling.frequency_penalty;
  r.seed = f.sampling.seed;
  r.prefill_num_iter = f.prefill_num_iter;
  r.decode_num_iter = f.decode_num_iter;
  r.ignore_eos = f.ignore_eos;
  r.json = f.json;
  return RunRemoteGenerate(r);
#else
  return absl::UnimplementedError("this build has no gRPC client (configure with GKA_WITH_GRPC)");
#endif
}

absl::Status RunGenerate(const GenerateFlags& f, bool chat) {
  if (!f.addr.empty()) return RunViaRouter(f, chat);
  if (f.engine.model_dir.empty())
    return absl::InvalidArgumentError("give --model DIR or --addr HOST:PORT");
  GKA_ASSIGN_OR_RETURN(auto tokenizer, TokenizerOf(f.engine.model_dir));
  std::vector<int32_t> prompt;
  if (chat) {
    if (!tokenizer)
      return absl::FailedPreconditionError("gka chat needs a checkpoint with a tokenizer");
    GKA_ASSIGN_OR_RETURN(text::ChatTemplate tmpl,
                         text::ChatTemplate::FromTokenizerConfig(f.engine.model_dir));
    std::vector<text::ChatMessage> messages;
    if (!f.system.empty()) messages.push_back({.role = text::Role::kSystem, .content = f.system});
    messages.push_back({.role = text::Role::kUser, .content = f.message});
    GKA_ASSIGN_OR_RETURN(std::string rendered,
                         tmpl.Render(messages, {.enable_thinking = f.enable_thinking}));
    GKA_ASSIGN_OR_RETURN(prompt, tokenizer->Encode(rendered));
  } else if (!f.prompt_ids.empty()) {
    GKA_ASSIGN_OR_RETURN(prompt, ParseIds(f.prompt_ids));
  } else {
    if (!tokenizer) {
      return absl::FailedPreconditionError(
          "this checkpoint has no tokenizer.json: pass --prompt-ids instead of --prompt");
    }
    GKA_ASSIGN_OR_RETURN(prompt, tokenizer->Encode(f.prompt));
  }

  EngineFlags ef = f.engine;
  ef.max_seq_len = static_cast<int32_t>(prompt.size()) + std::max(f.max_tokens, 1);
  GKA_ASSIGN_OR_RETURN(LoadedModel m, LoadModel(ef));
  GKA_ASSIGN_OR_RETURN(kernels::SamplingConfig sampling, Sampling(f.sampling, m.generation));
  GenerateOptions options{.prompt = prompt,
                          .max_tokens = f.max_tokens,
                          .sampling = sampling,
                          .prefill_num_iter = f.prefill_num_iter,
                          .decode_num_iter = f.decode_num_iter,
                          .ignore_eos = f.ignore_eos};
  const int32_t vocab_limit =
      tokenizer ? std::min(tokenizer->VocabSize(), m.engine->vocab_size()) : 0;
  const std::vector<int32_t> eos = EosIds(m.config, m.generation, tokenizer.get());

  // Stream text as it completes unless the output is one JSON object.
  std::optional<text::IncrementalDetokenizer> detok;
  if (tokenizer && !f.json) detok.emplace(*tokenizer, /*skip_special_tokens=*/true);
  absl::Status stream_status;
  auto on_token = [&](int32_t id) {
    if (!detok || !stream_status.ok()) return;
    auto piece = detok->Add(id);
    if (!piece.ok()) {
      stream_status = piece.status();
      return;
    }
    std::cout << *piece << std::flush;
  };
  GKA_ASSIGN_OR_RETURN(GenerateResult result,
                       Generate(*m.engine, options, eos, vocab_limit, on_token));
  GKA_RETURN_IF_ERROR(stream_status);
  if (detok) {
    std::cout << detok->Finish() << std::endl;
    GKA_LOG(INFO) << result.token_ids.size() << " tokens, finish_reason=" << result.finish_reason;
    return absl::OkStatus();
  }
  nlohmann::json out;
  out["token_ids"] = result.token_ids;
  if (tokenizer) {
    GKA_ASSIGN_OR_RETURN(std::string text,
                         tokenizer->Decode(result.token_ids, /*skip_special_tokens=*/true));
    out["text"] = text;
  }
  out["finish_reason"] = result.finish_reason;
  if (f.sampling.logprobs || f.sampling.top_logprobs > 0) {
    nlohmann::json logprobs = nlohmann::json::array();
    for (const engine::Engine::Sampled& s : result.samples) {
      nlohmann::json top = nlohmann::json::array();
      for (const engine::Engine::TopLogprob& t : s.top) {
        top.push_back({{"token_id", t.token}, {"logprob", t.logprob}});
      }
      logprobs.push_back({{"token_id", s.token}, {"logprob", s.logprob}, {"top", std::move(top)}});
    }
    out["logprobs"] = std::move(logprobs);
  }
  if (f.json) {
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
  } else {
    std::cout << "token_ids:";
    for (int32_t id : result.token_ids) std::cout << " " << id;
    std::cout << "\nfinish_reason: " << result.finish_reason << std::endl;
  }
  return absl::OkStatus();
}

}  // namespace

void RegisterGenerate(CLI::App& app, Action& run) {
  auto f = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate from a prompt with the local engine");
  AddEngineFlags(*cmd, f->engine);
  auto* text = cmd->add_option("--prompt", f->prompt, "prompt text (needs a tokenizer)");
  auto* ids = cmd->add_option("--prompt-ids", f->prompt_ids, "comma-separated prompt token ids");
  text->excludes(ids);
  AddSamplingFlags(*cmd, *f);
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->callback([f, &run] {
    run = [f] {
      if (f->prompt.empty() && f->prompt_ids.empty()) {
        return absl::InvalidArgumentError("give --prompt TEXT or --prompt-ids 1,2,3");
      }
      return RunGenerate(*f, /*chat=*/false);
    };
  });
}

void RegisterChat(CLI::App& app, Action& run) {
  auto f = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("chat", "One chat turn with the local engine, streamed");
  AddEngineFlags(*cmd, f->engine);
  cmd->add_option("message", f->message, "the user's message")->required();
  cmd->add_option("--system", f->system, "system message");
  cmd->add_flag("--enable-thinking", f->enable_thinking, "let the model think (Qwen3 switch)");
  AddSamplingFlags(*cmd, *f);
  cmd->add_flag("--json", f->json, "print one JSON object on stdout");
  cmd->callback([f, &run] { run = [f] { return RunGenerate(*f, /*chat=*/true); }; });
}

}  // namespace gka::cli
