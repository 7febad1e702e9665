//! The baseline must behave enough like a lab server for the harness to drive
//! it: ready line, answers, clean stop.

use std::time::Duration;

use testkit::{Server, wait_until};

#[test]
fn serves_and_stops_cleanly() {
    let mut server = Server::start(env!("CARGO_BIN_EXE_bare"), &["--workers", "2"]);
    assert_eq!(server.ready().model, "bare");
    for _ in 0..10 {
        let response = server.get("/");
        assert_eq!((response.status, response.body.as_str()), (200, "ok\n"));
    }
    assert_eq!(server.group_members().len(), 3, "a master and two workers");
    assert_eq!(server.terminate().code(), Some(0));
    assert!(wait_until(Duration::from_secs(2), || server
        .group_members()
        .is_empty()));
}

/// bare runs in `lab conns`, which takes servers to their descriptor limit:
/// it must not spin there either. It is no contract server, but answers
/// `GET /health` like any path.
#[test]
fn descriptor_exhaustion() {
    testkit::cases::descriptor_exhaustion(
        env!("CARGO_BIN_EXE_bare"),
        &[],
        testkit::cases::Profile::CONTRACT,
    );
}
