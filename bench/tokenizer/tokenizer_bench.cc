// Tokenizer speed on a model folder's tokenizer (default: the golden Qwen2
// fixture): encode throughput on ~1 MB of mixed text (first pass with a cold
// BPE cache, then warm), decode throughput, incremental decoding per token,
// and the latency of encoding one short chat prompt.
//
//   tokenizer_bench [model_dir] [threads]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"
#include "runtime/text/tokenizer.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

int main(int argc, char** argv) {
  using arbor::runtime::IncrementalDecoder;
  using arbor::runtime::Tokenizer;
  const std::string dir = argc > 1 ? argv[1] : "tests/fixtures/golden/qwen2";
  const int threads = argc > 2 ? std::atoi(argv[2]) : 4;
  auto load_start = std::chrono::steady_clock::now();
  auto tok = Tokenizer::FromModelDir(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 1;
  }
  std::printf("load %s: %.1f ms, vocab %d\n", dir.c_str(), Seconds(load_start) * 1e3,
              (*tok)->vocab_size());

  // Text: the fixture's strings (when present) plus prose, repeated to ~1 MB.
  std::string corpus =
      "Start with 17. Add 25, multiply by 3, subtract 9. What is the result?\n\n"
      "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 9 = 117\n\nThe answer is \\boxed{117}. ";
  std::ifstream tokens(dir + "/tokens.json");
  if (tokens) {
    std::stringstream ss;
    ss << tokens.rdbuf();
    for (const auto& c : nlohmann::json::parse(ss.str())) {
      corpus += c["text"].get<std::string>() + " ";
    }
  }
  std::string text;
  while (text.size() < (1u << 20)) text += corpus;

  std::vector<int32_t> ids;
  for (const char* pass : {"cold", "warm"}) {
    auto start = std::chrono::steady_clock::now();
    ids = *(*tok)->Encode(text, false);
    const double s = Seconds(start);
    std::printf("encode (%s cache): %.2f MB -> %zu tokens, %.1f ms, %.1f MB/s, %.2f M tokens/s\n",
                pass, text.size() / 1e6, ids.size(), s * 1e3, text.size() / s / 1e6,
                ids.size() / s / 1e6);
  }
  {
    auto start = std::chrono::steady_clock::now();
    const std::string back = (*tok)->Decode(ids);
    const double s = Seconds(start);
    std::printf("decode: %.1f ms, %.2f M tokens/s, round trip %s\n", s * 1e3, ids.size() / s / 1e6,
                back == text ? "exact" : "DIFFERS");
  }
  {
    IncrementalDecoder decoder(tok->get());
    size_t bytes = 0;
    auto start = std::chrono::steady_clock::now();
    for (int32_t id : ids) bytes += decoder.Add(id).size();
    bytes += decoder.Finish().size();
    const double s = Seconds(start);
    std::printf("incremental decode: %.1f ns/token (%zu bytes)\n", s / ids.size() * 1e9, bytes);
  }
  {
    const std::string prompt =
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nStart "
        "with 17. Add 25, multiply by 3, subtract 9. What is the result?<|im_end|>\n"
        "<|im_start|>assistant\n";
    constexpr int kRounds = 20000;
    size_t n = 0;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) n += (*tok)->Encode(prompt, false)->size();
    std::printf("short prompt (%zu bytes, %zu tokens): %.2f us/encode\n", prompt.size(),
                n / kRounds, Seconds(start) / kRounds * 1e6);
  }
  if (threads > 1) {
    // Shared tokenizer from several threads (the BPE cache is behind a mutex).
    std::vector<std::thread> workers;
    auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] { (void)(*tok)->Encode(text, false); });
    }
    for (auto& w : workers) w.join();
    const double s = Seconds(start);
    std::printf("encode, %d threads on one tokenizer: %.1f MB/s in total\n", threads,
                threads * text.size() / s / 1e6);
  }
  return 0;
}
