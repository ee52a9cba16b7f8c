#include "common/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <tuple>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/status.h"
#include "common/model/json_util.h"

namespace gka::model {
namespace {

namespace fs = std::filesystem;
using internal::Json;

// The reference implementation refuses headers above 100 MB; a larger length is corruption.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

absl::Status Corrupt(absl::string_view file, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("corrupt safetensors file ", file, ": ", what));
}

absl::Status CorruptTensor(absl::string_view file, absl::string_view name, absl::string_view what) {
  return Corrupt(file, absl::StrCat("tensor '", name, "': ", what));
}

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void PutLe64(uint64_t v, char* p) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// A JSON value that must be a non-negative integer (shape dims, offsets).
absl::StatusOr<uint64_t> NonNegative(const Json& v, absl::string_view file, absl::string_view name,
                                     absl::string_view field) {
  if (!v.is_number_integer()) {
    return CorruptTensor(file, name,
                         absl::StrCat(field, " holds ", internal::JsonTypeName(v),
                                      ", expected a non-negative integer"));
  }
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0) {
    return CorruptTensor(file, name, absl::StrCat(field, " holds a negative value ", v.dump()));
  }
  return v.get<uint64_t>();
}

bool IsSafetensorsFile(const fs::directory_entry& e) {
  std::error_code ec;
  return e.is_regular_file(ec) && e.path().extension() == ".safetensors";
}

}  // namespace

tensor::TensorView TensorInfo::view() const {
  return tensor::TensorView{const_cast<void*>(data), dtype, shape, tensor::Device::kCpu};
}

// ---- SafetensorsFile -------------------------------------------------------------------

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(const_cast<uint8_t*>(map_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(absl::string_view path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = std::string(path);
  const int fd = ::open(f->path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InternalError(msg);
  }
  absl::Cleanup close_fd = [fd] { ::close(fd); };  // the mapping outlives the descriptor
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (st.st_size < 8) {
    return Corrupt(path, absl::StrCat("truncated: ", st.st_size,
                                      " bytes, shorter than the 8-byte header length"));
  }
  f->size_ = static_cast<size_t>(st.st_size);
  void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(errno)));
  }
  f->map_ = static_cast<const uint8_t*>(m);
  GKA_RETURN_IF_ERROR(f->ParseHeader());
  return f;
}

absl::Status SafetensorsFile::ParseHeader() {
  const uint64_t header_len = ReadLe64(map_);
  if (header_len > size_ - 8) {
    return Corrupt(path_, absl::StrCat("header length ", header_len,
                                       " runs past the end of the "
                                       "file (",
                                       size_,
                                       " bytes); the file is truncated or "
                                       "not safetensors"));
  }
  if (header_len > kMaxHeaderBytes) {
    return Corrupt(path_, absl::StrCat("header length ", header_len, " exceeds 100 MB"));
  }
  const absl::string_view header_text(reinterpret_cast<const char*>(map_ + 8), header_len);
  absl::StatusOr<Json> header = internal::ParseJson(header_text, "its header");
  if (!header.ok()) return Corrupt(path_, header.status().message());
  if (!header->is_object()) {
    return Corrupt(path_, absl::StrCat("header is ", internal::JsonTypeName(*header),
                                       ", expected a JSON object"));
  }
  data_ = map_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;

  for (auto it = header->begin(); it != header->end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (v.is_object()) {
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
        }
      }
      continue;
    }
    if (!v.is_object()) {
      return CorruptTensor(
          path_, name,
          absl::StrCat("entry is ", internal::JsonTypeName(v), ", expected an object"));
    }
    const Json* dtype_json = internal::FindNonNull(v, "dtype");
    const Json* shape_json = internal::FindNonNull(v, "shape");
    const Json* offsets_json = internal::FindNonNull(v, "data_offsets");
    if (dtype_json == nullptr || !dtype_json->is_string()) {
      return CorruptTensor(path_, name, "missing or non-string 'dtype'");
    }
    if (shape_json == nullptr || !shape_json->is_array()) {
      return CorruptTensor(path_, name, "missing or non-list 'shape'");
    }
    if (offsets_json == nullptr || !offsets_json->is_array() || offsets_json->size() != 2) {
      return CorruptTensor(path_, name, "'data_offsets' must be a list [begin, end]");
    }
    absl::StatusOr<tensor::DType> dtype = tensor::DTypeFromName(dtype_json->get<std::string>());
    if (!dtype.ok()) return CorruptTensor(path_, name, dtype.status().message());
    if (shape_json->size() > static_cast<size_t>(tensor::Shape::kMaxRank)) {
      return CorruptTensor(
          path_, name,
          absl::StrCat("rank ", shape_json->size(), " exceeds ", tensor::Shape::kMaxRank));
    }
    std::vector<int64_t> dims;
    // Element count, saturated: any count above data_size cannot fit anyway.
    uint64_t numel = 1;
    bool too_big = false;
    for (const Json& d : *shape_json) {
      GKA_ASSIGN_OR_RETURN(uint64_t dim, NonNegative(d, path_, name, "shape"));
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) too_big = true;
      dims.push_back(static_cast<int64_t>(dim));
      if (dim == 0) {
        numel = 0;
      } else if (numel != 0 && numel > data_size / dim) {
        too_big = true;
      } else {
        numel *= dim;
      }
    }
    GKA_ASSIGN_OR_RETURN(uint64_t begin,
                         NonNegative((*offsets_json)[0], path_, name, "data_offsets"));
    GKA_ASSIGN_OR_RETURN(uint64_t end,
                         NonNegative((*offsets_json)[1], path_, name, "data_offsets"));
    const tensor::Shape shape = tensor::Shape::FromRange(dims.begin(), dims.end());
    if (begin > end || end > data_size) {
      return CorruptTensor(path_, name,
                           absl::StrCat("data_offsets [", begin, ", ", end,
                                        ") lie outside the "
                                        "data region of ",
                                        data_size, " bytes"));
    }
    const uint64_t elem = tensor::DTypeSize(*dtype);
    if (too_big || numel > data_size / elem || numel * elem != end - begin) {
      return CorruptTensor(
          path_, name,
          absl::StrCat("shape ", shape.ToString(), " of ", dtype_json->get<std::string>(),
                       " does not match data_offsets [", begin, ", ", end, ") (", end - begin,
                       " bytes)"));
    }
    entries_.emplace(name, Entry{*dtype, shape, begin, end});
    names_.push_back(name);
  }
  std::sort(names_.begin(), names_.end());

  // Overlap: sort the non-empty byte ranges; each must start at or after the previous end.
  std::vector<std::tuple<uint64_t, uint64_t, const std::string*>> ranges;
  for (const std::string& n : names_) {
    const Entry& e = entries_.at(n);
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end, &n);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (std::get<0>(ranges[i]) < std::get<1>(ranges[i - 1])) {
      return Corrupt(path_, absl::StrCat("tensors '", *std::get<2>(ranges[i - 1]), "' and '",
                                         *std::get<2>(ranges[i]), "' overlap"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorInfo> SafetensorsFile::Get(absl::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  const Entry& e = it->second;
  TensorInfo t;
  t.name = std::string(name);
  t.dtype = e.dtype;
  t.shape = e.shape;
  t.data = data_ + e.begin;
  t.nbytes = static_cast<size_t>(e.end - e.begin);
  t.file = path_;
  return t;
}

// ---- Checkpoint ------------------------------------------------------------------------

absl::Status Checkpoint::AddFile(std::unique_ptr<SafetensorsFile> file, bool all_tensors) {
  const size_t index = files_.size();
  if (all_tensors) {
    for (const std::string& name : file->names()) {
      auto [it, inserted] = where_.emplace(name, index);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor '", name, "' is present in both ", files_[it->second]->path(), " and ",
            file->path(), "; add a model.safetensors.index.json to say which one to use"));
      }
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(absl::string_view path) {
  std::unique_ptr<Checkpoint> c(new Checkpoint());
  c->path_ = std::string(path);
  const fs::path dir(c->path_);
  std::error_code ec;
  if (fs::is_regular_file(dir, ec)) {
    GKA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(c->path_));
    GKA_RETURN_IF_ERROR(c->AddFile(std::move(file), /*all_tensors=*/true));
    return c;
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("checkpoint ", path, " does not exist"));
  }

  const fs::path index_path = dir / "model.safetensors.index.json";
  if (fs::exists(index_path, ec)) {
    const std::string index_name = index_path.string();
    GKA_ASSIGN_OR_RETURN(std::string text, internal::ReadFile(index_name));
    GKA_ASSIGN_OR_RETURN(Json index, internal::ParseJson(text, index_name));
    const Json* map = internal::FindNonNull(index, "weight_map");
    if (map == nullptr || !map->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_name, ": 'weight_map' is missing or not an object"));
    }
    absl::flat_hash_map<std::string, size_t> shard_index;  // shard file name -> files_ index
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it.value().is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_name, ": weight_map['", it.key(), "'] must be a file name string"));
      }
      const std::string shard = it.value().get<std::string>();
      const fs::path rel(shard);
      if (shard.empty() || rel.is_absolute() ||
          std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; })) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_name, ": weight_map['", it.key(), "'] = '", shard,
                         "' must be a file inside the checkpoint directory"));
      }
      auto [pos, is_new] = shard_index.emplace(shard, c->files_.size());
      if (is_new) {
        absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
            SafetensorsFile::Open((dir / rel).string());
        if (!file.ok()) {
          return base::Annotate(file.status(),
                                absl::StrCat("shard '", shard, "' named by ", index_name));
        }
        GKA_RETURN_IF_ERROR(c->AddFile(*std::move(file), /*all_tensors=*/false));
      }
      const SafetensorsFile& holder = *c->files_[pos->second];
      if (!holder.Contains(it.key())) {
        return absl::InvalidArgumentError(absl::StrCat(index_name, " maps tensor '", it.key(),
                                                       "' to ", holder.path(),
                                                       ", which has no such tensor"));
      }
      c->where_[it.key()] = pos->second;
    }
    return c;
  }

  const fs::path single = dir / "model.safetensors";
  if (fs::exists(single, ec)) {
    GKA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single.string()));
    GKA_RETURN_IF_ERROR(c->AddFile(std::move(file), /*all_tensors=*/true));
    return c;
  }

  std::vector<fs::path> found;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (IsSafetensorsFile(e)) found.push_back(e.path());
  }
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot list ", path, ": ", ec.message()));
  }
  if (found.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no model.safetensors.index.json, model.safetensors or *.safetensors in ", path));
  }
  std::sort(found.begin(), found.end());
  for (const fs::path& p : found) {
    GKA_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(p.string()));
    GKA_RETURN_IF_ERROR(c->AddFile(std::move(file), /*all_tensors=*/true));
  }
  return c;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, index] : where_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

absl::StatusOr<TensorInfo> Checkpoint::Get(absl::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", path_));
  }
  return files_[it->second]->Get(name);
}

// ---- writer ----------------------------------------------------------------------------

absl::Status WriteSafetensors(absl::string_view path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  absl::flat_hash_set<absl::string_view> seen;
  for (const NamedTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor name '", t.name, "' is not allowed"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", t.name, "' given twice"));
    }
    if (t.view.device != tensor::Device::kCpu) {
      return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": tensor '", t.name,
                                                     "' is in device memory; copy it to host"));
    }
    if (t.view.ptr == nullptr && t.view.nbytes() > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", t.name, "' has no data"));
    }
  }
  // Larger elements first keeps every tensor aligned without padding between tensors
  // (which strict readers reject), as the Python library does.
  std::vector<const NamedTensor*> order;
  for (const NamedTensor& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const NamedTensor* a, const NamedTensor* b) {
    return tensor::DTypeSize(a->view.dtype) > tensor::DTypeSize(b->view.dtype);
  });

  Json header = Json::object();
  if (!metadata.empty()) {
    Json meta = Json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const NamedTensor* t : order) {
    Json shape = Json::array();
    for (int i = 0; i < t->view.shape.rank(); ++i) shape.push_back(t->view.shape[i]);
    const uint64_t n = t->view.nbytes();
    header[t->name] = {{"dtype", std::string(tensor::DTypeName(t->view.dtype))},
                       {"shape", shape},
                       {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const Json::exception& e) {  // a name or metadata value that is not UTF-8
    return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": ", e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  char len[8];
  PutLe64(text.size(), len);
  return internal::WriteFileAtomically(path, [&](std::FILE* f) {
    if (std::fwrite(len, 1, 8, f) != 8) return false;
    if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) return false;
    for (const NamedTensor* t : order) {
      const size_t n = t->view.nbytes();
      if (n > 0 && std::fwrite(t->view.ptr, 1, n, f) != n) return false;
    }
    return true;
  });
}

}  // namespace gka::model
