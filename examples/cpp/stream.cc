// Streaming with the C++ SDK: pull style, callback style, cancellation and errors.
//   stream [HOST:PORT]          (the API key, if the router wants one, from $GKA_API_KEY)
#include <iostream>

#include "absl/synchronization/notification.h"
#include "gka/sdk/client.h"

int main(int argc, char** argv) {
  gka::sdk::ClientOptions options;
  options.address = argc > 1 ? argv[1] : "127.0.0.1:50051";
  options.default_timeout = absl::Seconds(60);  // every call, retries included
  auto client = gka::sdk::Client::Create(options);
  if (!client.ok()) return std::cerr << client.status() << "\n", 1;

  // Pull style: Next() blocks for each chunk; Finish() gives the whole result.
  gka::sdk::Request request =
      gka::sdk::Request::Text("The capital of France is", {.max_tokens = 16, .temperature = 0.0f});
  std::unique_ptr<gka::sdk::Stream> stream = (*client)->GenerateStream(request);
  gka::sdk::Chunk chunk;
  while (stream->Next(&chunk)) std::cout << chunk.text << std::flush;
  absl::StatusOr<gka::sdk::Result> result = stream->Finish();
  if (!result.ok()) return std::cerr << "\n" << result.status() << "\n", 1;
  std::cout << "\n[" << gka::sdk::FinishReasonName(result->finish_reason) << ", "
            << result->usage.completion_tokens << " tokens, decode num_iter "
            << result->num_iter.decode << ", served by " << result->served_by.decode_worker_id
            << "]\n";

  // Callback style, cancelled after the first chunk: the router aborts the request.
  absl::Notification first_chunk;
  auto call = (*client)->GenerateStream(
      gka::sdk::ChatRequest({gka::sdk::ChatMessage::User("Count to one hundred.")},
                            {.max_tokens = 64}),
      {.on_chunk =
           [&](const gka::sdk::Chunk&) {
             if (!first_chunk.HasBeenNotified()) first_chunk.Notify();
           },
       .on_done =
           [](absl::StatusOr<gka::sdk::Result> r) {
             std::cout << "cancelled call ended: "
                       << (r.ok() ? "finished first" : absl::StatusCodeToString(r.status().code()))
                       << "\n";
           }});
  first_chunk.WaitForNotificationWithTimeout(absl::Seconds(30));
  call->Cancel();
  call->Wait();

  // Errors carry the server's structured error.
  gka::sdk::Request bad = gka::sdk::Request::Text("Hi", {.max_tokens = 16});
  bad.tier = "no-such-tier";
  absl::StatusOr<gka::sdk::Result> failed = (*client)->Generate(bad);
  if (!failed.ok()) {
    std::optional<gka::sdk::ErrorDetails> details = gka::sdk::GetErrorDetails(failed.status());
    std::cout << "error: " << absl::StatusCodeToString(failed.status().code())
              << " retryable=" << (details && details->retryable) << "\n";
  }
  return 0;
}
