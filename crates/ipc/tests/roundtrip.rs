//! Every transport carries every byte intact, at a few sizes (a page
//! boundary crossed and not, a mapping larger than a pipe's buffer), and
//! its peer ends cleanly: a process peer exits 0 when closed.

use std::time::Duration;

use ipc::{Bounds, Check, Family, PeerCommand, Transport};

/// This crate's test peer binary, which runs `ipc::peer::serve`.
fn peer() -> PeerCommand {
    PeerCommand {
        program: env!("CARGO_BIN_EXE_ipc-peer").into(),
        args: Vec::new(),
    }
}

const SIZES: [usize; 4] = [8, 4096 + 13, 200_000, (1 << 20) + 1];

fn bounds(messages: u32) -> Bounds {
    Bounds {
        warmup: 2,
        messages,
        duration: Duration::from_secs(30),
    }
}

#[test]
fn every_rust_transport_delivers_every_byte_and_closes_cleanly() {
    for transport in Transport::ALL {
        if transport.family() == Family::Node {
            continue;
        }
        let max = *SIZES.iter().max().unwrap();
        let mut link = ipc::open(transport, max, Check::Full, &peer())
            .unwrap_or_else(|e| panic!("{transport}: {e}"));
        let mut seq = 0;
        for len in SIZES {
            // `time` checks each ack: the sequence number read back from
            // the payload and a hash of every byte the peer received.
            let samples = ipc::time(link.as_mut(), len, Check::Full, &bounds(5), &mut seq)
                .unwrap_or_else(|e| panic!("{transport} at {len} bytes: {e}"));
            assert_eq!(samples.len(), 5, "{transport}");
            assert!(samples.iter().all(|&ns| ns > 0), "{transport}");
        }
        assert_eq!(seq, 4 * (2 + 5), "{transport}: warm-up and timed messages");
        link.close()
            .unwrap_or_else(|e| panic!("{transport}: closing: {e}"));
    }
}

#[test]
fn the_measured_check_passes_too_and_time_is_bounded_by_count() {
    let mut link = ipc::open(Transport::Shm, 1 << 16, Check::Pages, &peer()).unwrap();
    let mut seq = 100;
    let samples = ipc::time(link.as_mut(), 1 << 16, Check::Pages, &bounds(50), &mut seq).unwrap();
    assert_eq!(samples.len(), 50);
    link.close().unwrap();
}

#[test]
fn a_peer_that_fails_is_an_error_not_a_hang() {
    // A peer that checks differently from the sender: the first ack is
    // wrong and `time` says so.
    let mut link = ipc::open(Transport::UnixRaw, 4096, Check::Pages, &peer()).unwrap();
    let mut seq = 0;
    let error = ipc::time(link.as_mut(), 4096, Check::Full, &bounds(1), &mut seq).unwrap_err();
    assert!(matches!(error, ipc::IpcError::BadAck { .. }), "{error}");
    // A peer that is not there at all.
    let missing = PeerCommand {
        program: "/nonexistent/ipc-peer".into(),
        args: Vec::new(),
    };
    assert!(ipc::open(Transport::PipeRaw, 64, Check::Pages, &missing).is_err());
}

#[test]
fn node_transports_deliver_and_report_each_size() {
    if ipc::node::version().is_none() {
        eprintln!("skipping: `node` is not on PATH");
        return;
    }
    for transport in Transport::ALL {
        if transport.family() != Family::Node {
            continue;
        }
        let sizes = [64, 4096 + 13, (1 << 20) + 1];
        let found = ipc::node::measure(transport, &sizes, &bounds(3))
            .unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(found.len(), sizes.len(), "{transport}");
        assert!(
            found.iter().all(|ns| ns.len() == 3),
            "{transport}: {found:?}"
        );
    }
}
