//! `lab stream` end to end, tiny: slow clients download from a real
//! server's `/stream` and `/buffer`, every byte counted, memory sampled.

use harness::record::CellStatus;
use lab::experiments::stream::Endpoint;
use lab::experiments::stream::report::StreamRun;

mod common;
use common::{lab_ok, scratch};

#[test]
fn slow_clients_get_every_byte_of_both_endpoints_and_memory_is_sampled() {
    let out = scratch("stream");
    let args = [
        "stream",
        "--models",
        "threadpool",
        "--workers",
        "1",
        "--clients",
        "3",
        "--mb",
        "1",
        "--rate-kib",
        "4096",
        "--out",
        out.to_str().unwrap(),
        "--name",
        "s",
    ];
    let run: StreamRun = lab_ok(&args, &out, "s", "stream.json");
    let endpoints: Vec<Endpoint> = run.cells.iter().map(|c| c.endpoint).collect();
    assert_eq!(endpoints, [Endpoint::Stream, Endpoint::Buffer]);
    for cell in &run.cells {
        assert_eq!(cell.status, CellStatus::Ok, "{:?}", cell.error);
        assert_eq!((cell.completed, cell.failed), (3, 0));
        // CPU time comes in 10 ms ticks, which a download this small may
        // not reach; the switches are counted one by one.
        let per = cell.per_download.expect("CPU per download");
        assert!(per.voluntary_switches.is_some_and(|n| n > 0.0), "{per:?}");
        assert!(cell.pss_idle_bytes.unwrap() > 0 && cell.pss_peak_bytes.unwrap() > 0);
        let (first, total) = (cell.first_byte_ms.unwrap(), cell.total_s.unwrap());
        assert!(first.max / 1000.0 <= total.max, "{cell:?}");
        // 1 MiB at 4 MiB/s takes at least about a quarter of a second.
        assert!(total.min >= 0.2, "{cell:?}");
    }
    for file in ["stream.md", "stream.svg"] {
        assert!(out.join("s").join(file).exists(), "{file}");
    }
}
