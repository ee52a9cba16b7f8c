// Test support for the scheduler: a scripted MemoryModel that also plays the worker, carrying
// out plans the way the engine would and refusing any that overdraws memory.
//
// Owns: per-sequence page and slot bookkeeping of a pretend engine. Test-only.
//
//   ScriptedMemory mem(/*page_size=*/4, /*pages=*/16, /*slots=*/4);
//   StepPlan plan = sched->Schedule();
//   ASSERT_TRUE(mem.Execute(plan).ok());
//
// Thread-safety: not thread-safe.
#pragma once

#include <cstdint>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/scheduler/scheduler.h"

namespace gka::scheduler::testing {

class ScriptedMemory : public MemoryModel {
 public:
  ScriptedMemory(int32_t page_size, int32_t pages, int32_t slots)
      : page_size_(page_size), total_pages_(pages), total_slots_(slots) {}

  int32_t page_size() const override { return page_size_; }
  int32_t free_pages() const override { return total_pages_ - used_pages_ - external_pages_; }
  int32_t free_slots() const override {
    return total_slots_ - static_cast<int32_t>(device_.size());
  }

  // Memory held by someone other than the scheduler (transfer reservations).
  void set_external_pages(int32_t pages) { external_pages_ = pages; }
  int32_t external_pages() const { return external_pages_; }
  int32_t used_pages() const { return used_pages_; }
  int32_t total_pages() const { return total_pages_; }

  bool OnDevice(SequenceId id) const { return device_.contains(id); }
  bool OnHost(SequenceId id) const { return host_.contains(id); }
  int64_t Length(SequenceId id) const {
    if (auto it = device_.find(id); it != device_.end()) return it->second;
    if (auto it = host_.find(id); it != host_.end()) return it->second;
    return -1;
  }
  int32_t PagesOf(SequenceId id) const {
    auto it = device_.find(id);
    return it == device_.end() ? 0 : PagesFor(it->second, page_size_);
  }
  int32_t num_on_device() const { return static_cast<int32_t>(device_.size()); }
  int32_t num_on_host() const { return static_cast<int32_t>(host_.size()); }

  // Engine::ReserveForImport: a hand-off lands `length` tokens of state.
  absl::Status Import(SequenceId id, int64_t length) {
    if (device_.contains(id) || host_.contains(id)) return Error("import of live", id);
    if (free_slots() < 1) return Error("no slot to import", id);
    if (PagesFor(length, page_size_) > free_pages()) return Error("no pages to import", id);
    device_[id] = length;
    used_pages_ += PagesFor(length, page_size_);
    return absl::OkStatus();
  }

  // Carries out a plan in the documented order: preempt → resume → admit → Forward.
  absl::Status Execute(const StepPlan& plan) {
    for (SequenceId id : plan.preempt) {
      auto it = device_.find(id);
      if (it == device_.end()) return Error("preempt of non-resident", id);
      host_[id] = it->second;
      used_pages_ -= PagesFor(it->second, page_size_);
      device_.erase(it);
    }
    for (SequenceId id : plan.resume) {
      auto it = host_.find(id);
      if (it == host_.end()) return Error("resume of a sequence not on host", id);
      if (free_slots() < 1) return Error("resume without a free slot", id);
      const int32_t pages = PagesFor(it->second, page_size_);
      if (pages > free_pages()) {
        return Error(absl::StrCat("resume needs ", pages, " pages, free ", free_pages()), id);
      }
      device_[id] = it->second;
      used_pages_ += pages;
      host_.erase(it);
    }
    for (SequenceId id : plan.admit) {
      if (device_.contains(id) || host_.contains(id)) return Error("admit of live", id);
      if (free_slots() < 1) return Error("admit without a free slot", id);
      device_[id] = 0;
    }
    for (const BatchItem& item : plan.batch) {
      auto it = device_.find(item.id);
      if (it == device_.end()) return Error("forward of non-resident", item.id);
      if (it->second != item.position) {
        return Error(absl::StrCat("position ", item.position, " but length ", it->second), item.id);
      }
      if (item.tokens.empty()) return Error("empty item", item.id);
      const int64_t len = it->second + static_cast<int64_t>(item.tokens.size());
      const int32_t grow = PagesFor(len, page_size_) - PagesFor(it->second, page_size_);
      if (grow > free_pages()) {
        return Error(absl::StrCat("forward needs ", grow, " pages, free ", free_pages()), item.id);
      }
      used_pages_ += grow;
      it->second = len;
    }
    return absl::OkStatus();
  }

  // What the worker does with a finished sequence's memory.
  absl::Status Release(const FinishedSequence& f) {
    switch (f.residence) {
      case Residence::kDevice: {
        auto it = device_.find(f.id);
        if (it == device_.end()) return Error("release of non-resident", f.id);
        used_pages_ -= PagesFor(it->second, page_size_);
        device_.erase(it);
        break;
      }
      case Residence::kHost:
        if (host_.erase(f.id) != 1) return Error("release of a sequence not on host", f.id);
        break;
      case Residence::kNone:
        if (device_.contains(f.id) || host_.contains(f.id)) {
          return Error("sequence reported holding nothing holds memory", f.id);
        }
        break;
    }
    return absl::OkStatus();
  }

 private:
  static absl::Status Error(absl::string_view what, SequenceId id) {
    return absl::InternalError(absl::StrCat(what, " (sequence ", id.value(), ")"));
  }

  int32_t page_size_;
  int32_t total_pages_;
  int32_t total_slots_;
  int32_t used_pages_ = 0;
  int32_t external_pages_ = 0;
  absl::flat_hash_map<SequenceId, int64_t> device_;  // id → length
  absl::flat_hash_map<SequenceId, int64_t> host_;    // id → length of the exported state
};

}  // namespace gka::scheduler::testing
