// The memory a Scheduler plans against: KV pages of `page_size` tokens and GKA state slots,
// one slot per resident sequence.
//
// Owns: nothing; it is the narrow view of a worker's memory that the scheduler reads once per
// Schedule(). The worker implements it over its engine (free pages and slots of the engine's
// pools, minus whatever it has reserved for transfers). Must not depend on the engine, CUDA,
// gRPC or protobuf: the scheduler deals in counts and ids only.
//
//   class EngineMemory : public scheduler::MemoryModel {
//    public:
//     explicit EngineMemory(const engine::Engine& e) : e_(e) {}
//     int32_t page_size() const override { return e_.options().page_size; }
//     int32_t free_pages() const override { return e_.free_pages(); }
//     int32_t free_slots() const override { return e_.free_slots(); }
//    private:
//     const engine::Engine& e_;
//   };
//
// The scheduler computes the pages a sequence holds from its length (PagesFor below), which is
// how the engine allocates them; free counts must therefore already exclude every sequence the
// scheduler tracks as resident.
//
// Thread-safety: implementations are read from the scheduler's thread only (the engine thread).
#pragma once

#include <cstdint>

namespace gka::scheduler {

class MemoryModel {
 public:
  virtual ~MemoryModel() = default;

  // Tokens per KV page (≥ 1). Must not change while a Scheduler uses this model.
  virtual int32_t page_size() const = 0;
  // Pages and state slots that can be taken right now.
  virtual int32_t free_pages() const = 0;
  virtual int32_t free_slots() const = 0;
};

// Pages needed to hold `tokens` tokens: ceil(tokens / page_size).
inline int32_t PagesFor(int64_t tokens, int32_t page_size) {
  return static_cast<int32_t>((tokens + page_size - 1) / page_size);
}

}  // namespace gka::scheduler
