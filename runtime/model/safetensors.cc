#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace arbor::runtime {
namespace {

using Json = nlohmann::json;

// The format caps the header at 100 MB; anything larger is a corrupt length.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeEntry {
  absl::string_view name;
  SafetensorsDType dtype;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {"F64", SafetensorsDType::kF64, 8}, {"F32", SafetensorsDType::kF32, 4},
    {"F16", SafetensorsDType::kF16, 2}, {"BF16", SafetensorsDType::kBF16, 2},
    {"I64", SafetensorsDType::kI64, 8}, {"I32", SafetensorsDType::kI32, 4},
    {"I16", SafetensorsDType::kI16, 2}, {"I8", SafetensorsDType::kI8, 1},
    {"U8", SafetensorsDType::kU8, 1},   {"BOOL", SafetensorsDType::kBool, 1},
};

absl::Status FileError(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors file ", path, ": ", what));
}

absl::Status TensorError(absl::string_view path, absl::string_view tensor, absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("safetensors file ", path, ": tensor '", tensor, "' ", what));
}

// Parses one header entry into `view` (data pointer not yet set).
absl::Status ParseEntry(const std::string& path, const std::string& name, const Json& entry,
                        uint64_t data_size, TensorView* view, uint64_t* begin) {
  if (!entry.is_object()) return TensorError(path, name, "header entry is not an object");
  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return TensorError(path, name, "has no string 'dtype'");
  }
  const std::string dtype_name = dtype_it->get<std::string>();
  const DTypeEntry* dtype = nullptr;
  for (const DTypeEntry& d : kDTypes) {
    if (d.name == dtype_name) dtype = &d;
  }
  if (dtype == nullptr) {
    return TensorError(path, name, absl::StrCat("has unknown dtype '", dtype_name, "'"));
  }
  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return TensorError(path, name, "has no 'shape' list");
  }
  // Element count with overflow guard: anything above the data size is wrong anyway.
  uint64_t num_elements = 1;
  // The product of the non-zero dims must fit in int64_t, so that
  // TensorView::num_elements() cannot overflow whatever the order of the
  // dims (a zero after huge dims makes an empty tensor, not a license).
  unsigned __int128 nonzero_product = 1;
  for (const Json& dim : *shape_it) {
    if (!dim.is_number_integer() || dim.get<int64_t>() < 0) {
      return TensorError(path, name, absl::StrCat("has invalid shape ", shape_it->dump()));
    }
    const uint64_t d = dim.get<uint64_t>();
    view->shape.push_back(static_cast<int64_t>(d));
    const unsigned __int128 product = static_cast<unsigned __int128>(num_elements) * d;
    num_elements = product > data_size + 1 ? data_size + 1 : static_cast<uint64_t>(product);
    if (d != 0) {
      nonzero_product *= d;
      if (nonzero_product > static_cast<unsigned __int128>(std::numeric_limits<int64_t>::max())) {
        return TensorError(path, name,
                           absl::StrCat("has shape ", shape_it->dump(),
                                        " whose element count overflows a 64-bit integer"));
      }
    }
  }
  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return TensorError(path, name, "has no valid 'data_offsets' [begin, end]");
  }
  const uint64_t b = (*offsets_it)[0].get<uint64_t>();
  const uint64_t e = (*offsets_it)[1].get<uint64_t>();
  if (b > e) {
    return TensorError(path, name,
                       absl::StrCat("has data_offsets [", b, ", ", e, ") with begin > end"));
  }
  if (e > data_size) {
    return TensorError(path, name,
                       absl::StrCat("data [", b, ", ", e, ") extends past the end of the data (",
                                    data_size, " bytes): the file is truncated or corrupt"));
  }
  // Writers lay tensors out on element boundaries; an offset that is not is a
  // corrupt header, and reading it as the dtype would straddle elements.
  if (b % dtype->size != 0) {
    return TensorError(path, name,
                       absl::StrCat("has data offset ", b, ", not a multiple of the ", dtype->name,
                                    " element size (", dtype->size, " bytes): misaligned"));
  }
  const uint64_t expected = num_elements * dtype->size;
  if (e - b != expected) {
    return TensorError(path, name,
                       absl::StrCat("holds ", e - b, " bytes but dtype ", dtype->name, " shape ",
                                    shape_it->dump(), " needs ", expected));
  }
  view->name = name;
  view->file = path;
  view->dtype = dtype->dtype;
  view->num_bytes = static_cast<size_t>(e - b);
  *begin = b;
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

absl::string_view SafetensorsDTypeName(SafetensorsDType dtype) {
  for (const DTypeEntry& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t SafetensorsDTypeSize(SafetensorsDType dtype) {
  for (const DTypeEntry& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

int64_t TensorView::num_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

float Bf16ToFloat(uint16_t bits) {
  const uint32_t f = static_cast<uint32_t>(bits) << 16;
  float out;
  std::memcpy(&out, &f, sizeof(out));
  return out;
}

float Fp16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: mantissa * 2^-24
      const float value = std::ldexp(static_cast<float>(mantissa), -24);
      return sign ? -value : value;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

absl::Status ConvertToFloat32(const TensorView& tensor, absl::Span<float> out) {
  const size_t n = static_cast<size_t>(tensor.num_elements());
  if (out.size() != n) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' has ", n,
                                                   " elements, destination holds ", out.size()));
  }
  // An empty tensor's span may be null, which memcpy must not be given.
  if (n == 0) return absl::OkStatus();
  // The data section need not be aligned, so read through memcpy.
  switch (tensor.dtype) {
    case SafetensorsDType::kF32:
      std::memcpy(out.data(), tensor.data, n * sizeof(float));
      return absl::OkStatus();
    case SafetensorsDType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, tensor.data + 2 * i, 2);
        out[i] = Bf16ToFloat(bits);
      }
      return absl::OkStatus();
    case SafetensorsDType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, tensor.data + 2 * i, 2);
        out[i] = Fp16ToFloat(bits);
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors file ", tensor.file, ": tensor '", tensor.name, "' has dtype ",
          SafetensorsDTypeName(tensor.dtype), "; only F32, F16 and BF16 tensors can be loaded"));
  }
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open safetensors file ", path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat("cannot stat ", path, ": ", std::strerror(err)));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return FileError(
        path,
        absl::StrCat("is ", file_size, " bytes, shorter than the 8-byte header length: truncated"));
  }
  void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) {
    return absl::InternalError(absl::StrCat("cannot mmap ", path, ": ", std::strerror(mmap_errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_size_ = file_size;
  const auto* bytes = static_cast<const uint8_t*>(mapping);

  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", header_size,
                                        " exceeds the format's 100 MB limit: corrupt file"));
  }
  if (header_size > file_size - 8) {
    return FileError(path, absl::StrCat("header length ", header_size, " exceeds the ",
                                        file_size - 8, " bytes after it: truncated"));
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  Json header = Json::parse(header_begin, header_begin + header_size, nullptr,
                            /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return FileError(path, "header is not a JSON object");
  }
  const uint64_t data_size = file_size - 8 - header_size;
  const uint8_t* data = bytes + 8 + header_size;
  std::vector<std::pair<uint64_t, size_t>> by_offset;  // (begin, tensor index)
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return FileError(path, "__metadata__ is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (m->is_string()) file->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    TensorView view;
    uint64_t begin = 0;
    if (absl::Status s = ParseEntry(path, it.key(), *it, data_size, &view, &begin); !s.ok()) {
      return s;
    }
    view.data = data + begin;
    by_offset.emplace_back(begin, file->tensors_.size());
    file->index_[view.name] = file->tensors_.size();
    file->tensors_.push_back(std::move(view));
  }
  std::sort(by_offset.begin(), by_offset.end());
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorView& prev = file->tensors_[by_offset[i - 1].second];
    const uint64_t prev_end = by_offset[i - 1].first + prev.num_bytes;
    if (by_offset[i].first < prev_end) {
      const TensorView& cur = file->tensors_[by_offset[i].second];
      return TensorError(
          path, cur.name,
          absl::StrCat("overlaps tensor '", prev.name, "' (starts at byte ", by_offset[i].first,
                       ", '", prev.name, "' ends at ", prev_end, ")"));
    }
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorView* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<std::unique_ptr<SafetensorsCheckpoint>> SafetensorsCheckpoint::Open(
    const std::string& model_dir) {
  std::unique_ptr<SafetensorsCheckpoint> checkpoint(new SafetensorsCheckpoint());
  checkpoint->model_dir_ = model_dir;
  const std::string single = model_dir + "/model.safetensors";
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  auto add_file = [&](std::unique_ptr<SafetensorsFile> file) -> absl::Status {
    for (const TensorView& t : file->tensors()) {
      auto [it, inserted] = checkpoint->tensors_.emplace(t.name, &t);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint ", model_dir, ": tensor '",
                                                       t.name, "' appears in both ",
                                                       it->second->file, " and ", t.file));
      }
    }
    checkpoint->files_.push_back(std::move(file));
    return absl::OkStatus();
  };

  if (FileExists(index_path)) {
    absl::StatusOr<std::string> text = ReadTextFile(index_path);
    if (!text.ok()) return text.status();
    Json index = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (index.is_discarded() || !index.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
    }
    auto map_it = index.find("weight_map");
    if (map_it == index.end() || !map_it->is_object() || map_it->empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": field 'weight_map' is missing or empty"));
    }
    std::vector<std::string> shard_names;
    for (auto it = map_it->begin(); it != map_it->end(); ++it) {
      if (!it->is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": weight_map entry for '", it.key(), "' is not a file name"));
      }
      const std::string shard = it->get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "..") {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": weight_map entry for '",
                                                       it.key(), "' names bad file '", shard, "'"));
      }
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) {
        shard_names.push_back(shard);
      }
    }
    for (const std::string& shard : shard_names) {
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
          SafetensorsFile::Open(model_dir + "/" + shard);
      if (!file.ok()) return file.status();
      if (absl::Status s = add_file(*std::move(file)); !s.ok()) return s;
    }
    for (auto it = map_it->begin(); it != map_it->end(); ++it) {
      const TensorView* t = checkpoint->Find(it.key());
      const std::string expected = model_dir + "/" + it->get<std::string>();
      if (t == nullptr || t->file != expected) {
        return absl::InvalidArgumentError(absl::StrCat(index_path, ": tensor '", it.key(),
                                                       "' is not in the shard it names, ",
                                                       it->get<std::string>()));
      }
    }
    return checkpoint;
  }
  if (FileExists(single)) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(single);
    if (!file.ok()) return file.status();
    if (absl::Status s = add_file(*std::move(file)); !s.ok()) return s;
    return checkpoint;
  }
  return absl::NotFoundError(
      absl::StrCat("no model.safetensors or model.safetensors.index.json in ", model_dir));
}

const TensorView* SafetensorsCheckpoint::Find(absl::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

absl::StatusOr<const TensorView*> SafetensorsCheckpoint::Get(absl::string_view name) const {
  const TensorView* t = Find(name);
  if (t == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", model_dir_, " has no tensor '", name, "'"));
  }
  return t;
}

std::vector<std::string> SafetensorsCheckpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace arbor::runtime
