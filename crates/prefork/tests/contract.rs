//! The contract cases every model shares, run against `prefork` under each
//! `--balance` policy: one inherited socket, and one `SO_REUSEPORT` socket
//! per worker, which take different paths through binding, accepting and
//! replacing a worker.

testkit::contract_tests!(
    mod shared,
    env!("CARGO_BIN_EXE_prefork"),
    flags: ["--balance", "shared"]
);
testkit::contract_tests!(
    mod reuseport,
    env!("CARGO_BIN_EXE_prefork"),
    flags: ["--balance", "reuseport"]
);
