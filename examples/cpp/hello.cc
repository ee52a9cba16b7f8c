// The five lines a user writes: connect to a gkaserve router and ask one question.
//   hello [HOST:PORT]        (default 127.0.0.1:50051)
#include <iostream>

#include "gka/sdk/client.h"

int main(int argc, char** argv) {
  auto client = gka::sdk::Client::Create({.address = argc > 1 ? argv[1] : "127.0.0.1:50051"});
  auto reply = (*client)->Chat({gka::sdk::ChatMessage::User("What is linear attention?")},
                               {.max_tokens = 32});
  if (!reply.ok()) {
    std::cerr << reply.status() << "\n";
    return 1;
  }
  std::cout << reply->text << "\n";
}
