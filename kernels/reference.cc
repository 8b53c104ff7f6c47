#include "kernels/reference.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/check.h"
#include "kernels/sampling_math.h"

namespace arbor::kernels::reference {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Row of the KV pool holding `position` of a sequence, for one KV head.
inline size_t KvOffset(const int32_t* block_table_row, int position, int kv_head,
                       const AttentionShape& shape) {
  const int block = block_table_row[position / kKvBlockSize];
  ARBOR_CHECK(block >= 0);
  const size_t slot = static_cast<size_t>(block) * kKvBlockSize + position % kKvBlockSize;
  return (slot * shape.num_kv_heads + kv_head) * shape.head_dim;
}

}  // namespace

float Bf16ToFloat(Bf16 bits) {
  const uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

float Fp8E4m3ToFloat(uint8_t bits) {
  const float sign = (bits & 0x80) != 0 ? -1.0f : 1.0f;
  const int exponent = (bits >> 3) & 0xf, mantissa = bits & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  if (exponent == 0) return sign * std::ldexp(static_cast<float>(mantissa), -9);  // subnormal
  return sign * std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
}

uint8_t FloatToFp8E4m3(float value) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  if (std::isnan(value)) return sign | 0x7f;
  const float magnitude = std::min(std::fabs(value), 448.0f);  // saturate (0x7e is 448)
  // Codes 0..0x7e are the non-negative values in increasing order: the last
  // code not above the magnitude, or the next one when that is nearer or
  // equally near with an even code (ties to even).
  static const std::array<float, 0x7f> kValues = [] {
    std::array<float, 0x7f> values;
    for (int code = 0; code < 0x7f; ++code) values[code] = Fp8E4m3ToFloat(code);
    return values;
  }();
  const uint8_t below = static_cast<uint8_t>(
      std::upper_bound(kValues.begin(), kValues.end(), magnitude) - kValues.begin() - 1);
  if (below == 0x7e) return sign | below;
  const float low = Fp8E4m3ToFloat(below), high = Fp8E4m3ToFloat(below + 1);
  const float to_low = magnitude - low, to_high = high - magnitude;
  const bool up = to_high < to_low || (to_high == to_low && (below & 1) != 0);
  return sign | static_cast<uint8_t>(below + (up ? 1 : 0));
}

Bf16 FloatToBf16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if (std::isnan(value)) return static_cast<Bf16>((word >> 16) | 0x40);
  word += 0x7FFF + ((word >> 16) & 1);  // round to nearest even
  return static_cast<Bf16>(word >> 16);
}

void EmbeddingGather(const int32_t* tokens, const float* table, float* out, int num_tokens,
                     int hidden, int vocab) {
  for (int t = 0; t < num_tokens; ++t) {
    float* row = out + static_cast<size_t>(t) * hidden;
    if (tokens[t] < 0 || tokens[t] >= vocab) {
      std::fill(row, row + hidden, 0.0f);
    } else {
      std::copy_n(table + static_cast<size_t>(tokens[t]) * hidden, hidden, row);
    }
  }
}

void RmsNormResidual(const float* x, float* residual, const float* weight, float* out,
                     int num_tokens, int hidden, float eps) {
  for (int t = 0; t < num_tokens; ++t) {
    float* r = residual + static_cast<size_t>(t) * hidden;
    if (x != nullptr) {
      const float* xr = x + static_cast<size_t>(t) * hidden;
      for (int i = 0; i < hidden; ++i) r[i] += xr[i];
    }
    double sum_sq = 0.0;
    for (int i = 0; i < hidden; ++i) sum_sq += static_cast<double>(r[i]) * r[i];
    const float inv_rms = 1.0f / std::sqrt(static_cast<float>(sum_sq / hidden) + eps);
    float* o = out + static_cast<size_t>(t) * hidden;
    for (int i = 0; i < hidden; ++i) o[i] = r[i] * inv_rms * weight[i];
  }
}

std::vector<float> RopeInvFreq(const RopeParams& params, int head_dim) {
  ARBOR_CHECK(head_dim > 0 && head_dim % 2 == 0);
  std::vector<float> inv_freq(head_dim / 2);
  // fp32 throughout, as transformers computes it.
  for (int i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = 1.0f / std::pow(params.theta, static_cast<float>(2 * i) / head_dim);
  }
  if (!params.llama3) return inv_freq;
  const float old_context = static_cast<float>(params.original_max_position_embeddings);
  const float low_freq_wavelen = old_context / params.low_freq_factor;
  const float high_freq_wavelen = old_context / params.high_freq_factor;
  for (float& f : inv_freq) {
    const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
    float scaled = wavelen > low_freq_wavelen ? f / params.factor : f;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      const float smooth = (old_context / wavelen - params.low_freq_factor) /
                           (params.high_freq_factor - params.low_freq_factor);
      scaled = (1.0f - smooth) * scaled / params.factor + smooth * scaled;
    }
    f = scaled;
  }
  return inv_freq;
}

void ApplyRope(float* q, float* k, const int32_t* positions, const float* inv_freq, int num_tokens,
               int num_heads, int num_kv_heads, int head_dim) {
  const int half = head_dim / 2;
  auto rotate = [&](float* vec, int pos) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos) * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      const float x0 = vec[i], x1 = vec[i + half];
      vec[i] = x0 * c - x1 * s;
      vec[i + half] = x1 * c + x0 * s;
    }
  };
  for (int t = 0; t < num_tokens; ++t) {
    for (int h = 0; h < num_heads; ++h) {
      rotate(q + (static_cast<size_t>(t) * num_heads + h) * head_dim, positions[t]);
    }
    for (int h = 0; h < num_kv_heads; ++h) {
      rotate(k + (static_cast<size_t>(t) * num_kv_heads + h) * head_dim, positions[t]);
    }
  }
}

void SwiGlu(const float* gate_up, float* out, int num_tokens, int inter) {
  for (int t = 0; t < num_tokens; ++t) {
    const float* gate = gate_up + static_cast<size_t>(t) * 2 * inter;
    const float* up = gate + inter;
    for (int i = 0; i < inter; ++i) {
      out[static_cast<size_t>(t) * inter + i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
  }
}

void KvAppend(const float* k, const float* v, const int32_t* positions, const int32_t* seq_starts,
              const int32_t* block_tables, float* k_cache, float* v_cache, int num_seqs,
              int max_blocks, int num_kv_heads, int head_dim) {
  const size_t row = static_cast<size_t>(num_kv_heads) * head_dim;
  for (int s = 0; s < num_seqs; ++s) {
    for (int t = seq_starts[s]; t < seq_starts[s + 1]; ++t) {
      const int block_index = positions[t] / kKvBlockSize;
      ARBOR_CHECK(block_index < max_blocks);
      const int block = block_tables[static_cast<size_t>(s) * max_blocks + block_index];
      if (block < 0) continue;
      const size_t slot = static_cast<size_t>(block) * kKvBlockSize + positions[t] % kKvBlockSize;
      std::copy_n(k + t * row, row, k_cache + slot * row);
      std::copy_n(v + t * row, row, v_cache + slot * row);
    }
  }
}

void AttentionPartialRow(const float* q, int head, const int32_t* block_table_row, int begin,
                         int end, const float* k_cache, const float* v_cache,
                         const AttentionShape& shape, float* o, float* lse) {
  const int d = shape.head_dim;
  const int kv_head = head / (shape.num_heads / shape.num_kv_heads);
  std::fill(o, o + d, 0.0f);
  if (end <= begin) {
    *lse = kNegInf;
    return;
  }
  std::vector<double> scores(end - begin);
  double max_score = -std::numeric_limits<double>::infinity();
  for (int p = begin; p < end; ++p) {
    const float* key = k_cache + KvOffset(block_table_row, p, kv_head, shape);
    double dot = 0.0;
    for (int i = 0; i < d; ++i) dot += static_cast<double>(q[i]) * key[i];
    scores[p - begin] = dot * shape.scale;
    max_score = std::max(max_score, scores[p - begin]);
  }
  std::vector<double> acc(d, 0.0);
  double sum = 0.0;
  for (int p = begin; p < end; ++p) {
    const double w = std::exp(scores[p - begin] - max_score);
    sum += w;
    const float* value = v_cache + KvOffset(block_table_row, p, kv_head, shape);
    for (int i = 0; i < d; ++i) acc[i] += w * value[i];
  }
  for (int i = 0; i < d; ++i) o[i] = static_cast<float>(acc[i] / sum);
  *lse = static_cast<float>(max_score + std::log(sum));
}

void PagedAttention(const float* q, const int32_t* positions, const int32_t* seq_starts,
                    const int32_t* block_tables, const int32_t* context_lens, const float* k_cache,
                    const float* v_cache, float* out, int num_seqs, const AttentionShape& shape) {
  const int d = shape.head_dim;
  for (int s = 0; s < num_seqs; ++s) {
    const int32_t* table = block_tables + static_cast<size_t>(s) * shape.max_blocks;
    for (int t = seq_starts[s]; t < seq_starts[s + 1]; ++t) {
      const int end = std::min(context_lens[s], positions[t] + 1);
      for (int h = 0; h < shape.num_heads; ++h) {
        const size_t off = (static_cast<size_t>(t) * shape.num_heads + h) * d;
        float lse;
        AttentionPartialRow(q + off, h, table, 0, end, k_cache, v_cache, shape, out + off, &lse);
      }
    }
  }
}

void MergeAttentionStates(const float* o_parts, const float* lse_parts, float* out, float* lse_out,
                          int num_parts, int num_rows, int num_heads, int head_dim) {
  const size_t rows = static_cast<size_t>(num_rows) * num_heads;
  for (size_t r = 0; r < rows; ++r) {
    float max_lse = kNegInf;
    for (int j = 0; j < num_parts; ++j) max_lse = std::max(max_lse, lse_parts[j * rows + r]);
    float* o = out + r * head_dim;
    std::fill(o, o + head_dim, 0.0f);
    if (max_lse == kNegInf) {
      if (lse_out != nullptr) lse_out[r] = kNegInf;
      continue;
    }
    double total = 0.0;
    std::vector<double> acc(head_dim, 0.0);
    for (int j = 0; j < num_parts; ++j) {
      const double w = std::exp(static_cast<double>(lse_parts[j * rows + r]) - max_lse);
      total += w;
      const float* oj = o_parts + (j * rows + r) * head_dim;
      for (int i = 0; i < head_dim; ++i) acc[i] += w * oj[i];
    }
    for (int i = 0; i < head_dim; ++i) o[i] = static_cast<float>(acc[i] / total);
    if (lse_out != nullptr) lse_out[r] = static_cast<float>(max_lse + std::log(total));
  }
}

SampledToken Sample(const float* logits, int vocab, const SampleParams& params) {
  ARBOR_CHECK(vocab > 0);
  float max_logit = kNegInf;
  int32_t argmax = 0;
  for (int i = 0; i < vocab; ++i) {
    if (logits[i] > max_logit) {
      max_logit = logits[i];
      argmax = i;
    }
  }
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_z = max_logit + std::log(sum);
  SampledToken result;
  if (!(params.temperature > 0.0f)) {
    result.token = argmax;
    result.logprob = static_cast<float>(logits[argmax] - log_z);
    return result;
  }
  const float inv_t = 1.0f / params.temperature;
  // Candidates best-first by SamplingKey.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return SamplingKey(logits[a], a) > SamplingKey(logits[b], b);
  });
  int kept = vocab;
  if (params.top_k > 0 && params.top_k < vocab) kept = params.top_k;
  uint64_t kept_mass = 0;
  for (int i = 0; i < kept; ++i) kept_mass += SamplingMass(logits[order[i]], max_logit, inv_t);
  if (params.top_p < 1.0f) {
    const uint64_t target = TopPTarget(params.top_p, kept_mass);
    uint64_t running = 0;
    int n = 0;
    while (n < kept && running < target) {
      running += SamplingMass(logits[order[n]], max_logit, inv_t);
      ++n;
    }
    kept = n;
    kept_mass = running;
  }
  // Kept tokens in ascending id order.
  std::vector<int32_t> ids(order.begin(), order.begin() + kept);
  std::sort(ids.begin(), ids.end());
  const uint64_t draw = DrawTarget(params.seed, params.stream, params.position, kept_mass);
  uint64_t running = 0;
  result.token = ids.back();
  for (int32_t id : ids) {
    running += SamplingMass(logits[id], max_logit, inv_t);
    if (running > draw) {
      result.token = id;
      break;
    }
  }
  result.logprob = static_cast<float>(logits[result.token] - log_z);
  return result;
}

void Linear(const float* x, const float* w, float* y, int m, int n, int k) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int t = 0; t < k; ++t) {
        sum += double{x[static_cast<size_t>(i) * k + t]} * w[static_cast<size_t>(j) * k + t];
      }
      y[static_cast<size_t>(i) * n + j] = static_cast<float>(sum);
    }
  }
}

}  // namespace arbor::kernels::reference
