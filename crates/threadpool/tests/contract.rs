//! The contract cases every model shares, run against `threadpool`.

testkit::contract_tests!(env!("CARGO_BIN_EXE_threadpool"));
