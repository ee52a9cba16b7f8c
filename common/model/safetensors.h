// safetensors files: read (mmap, validated header), a checkpoint of one or many files, and
// a writer.
//
// Owns: SafetensorsFile (one memory-mapped file, RAII), Checkpoint (a model directory:
// `model.safetensors`, or shards named by `model.safetensors.index.json`, or else every
// `*.safetensors` in it), WriteSafetensors. A corrupt, truncated or hostile file is a Status
// naming the file and the tensor, never a crash or an out-of-bounds read. Must not depend on
// anything above base and tensor (no model config, no kernels); config-aware checks live in
// weights.h.
//
//   GKA_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open("/models/gka-32b"));
//   GKA_ASSIGN_OR_RETURN(TensorInfo t, ckpt->Get("model.norm.weight"));
//   // t.dtype == DType::kBF16, t.shape == [5120], t.data points into the mapping.
//
//   WriteSafetensors("/tmp/out.safetensors", {{"logits", logits.view()}}, {{"format", "pt"}});
//
// Thread-safety: after Open, both classes are immutable; any number of threads may call
// their const methods. Views and pointers they hand out live as long as the object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor/tensor.h"

namespace gka::model {

// One tensor inside a mapped file; valid while the SafetensorsFile (or Checkpoint) lives.
struct TensorInfo {
  std::string name;
  tensor::DType dtype = tensor::DType::kF32;
  tensor::Shape shape;         // row-major, contiguous
  const void* data = nullptr;  // nbytes bytes inside the read-only mapping. Aligned to the
                               // element size when the writer kept the safetensors
                               // alignment convention (ours and the Python library do)
  size_t nbytes = 0;
  std::string file;  // path of the file holding the tensor, for messages

  // A host view over the mapping, for use as a read-only input: the pages are mapped
  // PROT_READ, so writing through view().ptr faults.
  tensor::TensorView view() const;
};

class SafetensorsFile {
 public:
  // Maps `path` and validates the header: length within the file, valid JSON, every
  // tensor's dtype supported (F32, BF16, F16, I64, I32, U8), shape consistent with its
  // data_offsets, offsets inside the data region, no two tensors overlapping.
  // `__metadata__` is kept (string values only) but never interpreted.
  // NotFound if the file does not exist; InvalidArgument for a corrupt file.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(absl::string_view path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // sorted
  bool Contains(absl::string_view name) const { return entries_.contains(name); }
  // NotFound naming the tensor and the file when absent.
  absl::StatusOr<TensorInfo> Get(absl::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  struct Entry {
    tensor::DType dtype;
    tensor::Shape shape;
    uint64_t begin;  // byte offsets into the data region
    uint64_t end;
  };
  SafetensorsFile() = default;
  absl::Status ParseHeader();

  std::string path_;
  const uint8_t* map_ = nullptr;  // whole file, PROT_READ; unmapped by the destructor
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data region (after the header)
  absl::flat_hash_map<std::string, Entry> entries_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint: every tensor of a model, whichever file holds it.
class Checkpoint {
 public:
  // `path` is a directory holding
  //   1. model.safetensors.index.json (sharded: its weight_map names each tensor's file;
  //      each shard is opened once; a listed tensor missing from its shard is an error), else
  //   2. model.safetensors, else
  //   3. every *.safetensors file (a tensor present in two of them is an error);
  // or `path` is one .safetensors file.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(absl::string_view path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool Contains(absl::string_view name) const { return where_.contains(name); }
  // The tensor and (TensorInfo::file) the file it came from. NotFound naming the tensor and
  // the checkpoint when absent.
  absl::StatusOr<TensorInfo> Get(absl::string_view name) const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  Checkpoint() = default;
  absl::Status AddFile(std::unique_ptr<SafetensorsFile> file, bool all_tensors);

  std::string path_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  absl::flat_hash_map<std::string, size_t> where_;  // tensor name -> index into files_
};

struct NamedTensor {
  std::string name;
  tensor::TensorView view;  // host memory, contiguous; any DType
};

// Writes a safetensors file: tensors ordered by decreasing element size (then as given), so
// every tensor stays aligned to its element size with no gaps between tensors; header padded
// with spaces to a multiple of 8 bytes. Written to `path.tmp` and renamed, so readers never
// see a partial file. InvalidArgument for an empty or duplicate name or a device view.
absl::Status WriteSafetensors(absl::string_view path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace gka::model
