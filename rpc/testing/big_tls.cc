// 256 KiB of initial-exec TLS in a library the test binary links at start,
// like cuBLAS's: every thread of the process carries it on its stack.
#include "rpc/testing/big_tls.h"

namespace arbor::rpc::testing {

namespace {
thread_local char big_tls[256 << 10];
}  // namespace

int TouchBigTls(int i) {
  big_tls[i % sizeof(big_tls)] = static_cast<char>(i);
  return big_tls[(i * 7) % sizeof(big_tls)];
}

}  // namespace arbor::rpc::testing
