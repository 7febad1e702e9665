//! The contract cases every model shares, run against `prefork` under each
//! `--balance` policy: one inherited socket, one `SO_REUSEPORT` socket per
//! worker, and connections the master accepts and hands over, which take
//! different paths through binding, accepting, draining and replacing a
//! worker.

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
testkit::contract_tests!(
    mod rr,
    env!("CARGO_BIN_EXE_prefork"),
    flags: ["--balance", "rr"]
);
