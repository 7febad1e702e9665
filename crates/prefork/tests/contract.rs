//! The contract cases every model shares, run against `prefork`.

testkit::contract_tests!(env!("CARGO_BIN_EXE_prefork"));
