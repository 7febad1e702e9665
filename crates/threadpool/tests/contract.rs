//! The contract cases every model shares, run against `threadpool`.

testkit::contract_tests!(env!("CARGO_BIN_EXE_threadpool"));

// The same contract with the jobs on a rayon pool.
testkit::contract_tests!(mod rayon, env!("CARGO_BIN_EXE_threadpool"), flags: ["--pool", "rayon"]);
