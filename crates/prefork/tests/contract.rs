//! The contract cases every model shares, run against `prefork`.

const BIN: &str = env!("CARGO_BIN_EXE_prefork");

#[test]
fn endpoints() {
    testkit::cases::endpoints(BIN, &[]);
}

#[test]
fn bad_input() {
    testkit::cases::bad_input(BIN, &[]);
}

#[test]
fn slow_headers_are_cut_off() {
    testkit::cases::slow_headers_are_cut_off(BIN, &[]);
}

#[test]
fn graceful_shutdown() {
    testkit::cases::graceful_shutdown(BIN, &[]);
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for flags in [
        &["--workers", "0"][..],
        &["--workers", "x"],
        &["--listen", "nowhere"],
        &["--bogus"],
    ] {
        let output = std::process::Command::new(BIN)
            .args(flags)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flags:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{flags:?}");
    }
}
