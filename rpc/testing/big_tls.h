// A test library holding 256 KiB of static TLS (rpc_server_test): linking it
// reproduces what cuBLAS does to a process's thread stacks.
#ifndef ARBOR_RPC_TESTING_BIG_TLS_H_
#define ARBOR_RPC_TESTING_BIG_TLS_H_

namespace arbor::rpc::testing {

// Writes and reads the TLS block, so the library stays linked (--as-needed).
int TouchBigTls(int i);

}  // namespace arbor::rpc::testing

#endif  // ARBOR_RPC_TESTING_BIG_TLS_H_
