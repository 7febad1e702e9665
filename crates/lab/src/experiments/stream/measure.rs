//! One cell, measured: start the server, sample its memory while the slow
//! clients download, stop it. The result is working data ([`Observed`]);
//! [`super::figures`] makes the record.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::TrialError;
use harness::procs::{self, Counters, Memory, Sampler};
use harness::servers::{Server, Servers, StartRequest};
use harness::session::Session;
use harness::slowread::{self, Download, SlowSpec};

use super::{Cell, Settings};

const GRACE_MS: u64 = 2_000;
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// What a cell needs besides itself.
#[derive(Debug)]
pub struct Setup<'a> {
    pub session: &'a Session,
    pub servers: &'a Servers,
    pub settings: &'a Settings,
}

/// What one cell measured, as far as it got.
#[derive(Debug, Default)]
pub struct Observed {
    pub idle: Option<Memory>,
    pub peak: Option<Memory>,
    pub samples: u32,
    /// The most memory the kernel held for TCP sockets, machine-wide
    /// (`/proc/net/sockstat`), during the downloads.
    pub kernel_tcp_peak: Option<u64>,
    pub downloads: Vec<Download>,
    /// What the server's processes spent during the downloads, and how
    /// long they took.
    pub server: Option<Counters>,
    pub wall_s: f64,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stderr_tail: Vec<String>,
}

/// Measures `cell`; `None` only when interrupted.
pub fn cell(setup: &Setup, cell: &Cell) -> Option<Observed> {
    crate::cells::observe(
        setup.session,
        |out| measure(setup, cell, out),
        |out: &mut Observed, error| out.error = Some(error),
    )
}

/// Samples the kernel's TCP memory on a thread until stopped, keeping the
/// most seen.
struct KernelTcp {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Option<u64>>,
}

impl KernelTcp {
    fn start(interval: Duration) -> KernelTcp {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = None;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(procs::kernel_tcp_bytes());
                std::thread::sleep(interval);
            }
            peak
        });
        KernelTcp { stop, handle }
    }

    fn stop(self) -> Option<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

fn measure(setup: &Setup, cell: &Cell, out: &mut Observed) -> Result<(), TrialError> {
    let settings = setup.settings;
    let request = StartRequest::new(settings.workers, GRACE_MS);
    let (code, _left) = crate::cells::with_server(
        setup.servers,
        &cell.kind,
        &request,
        out,
        |out| &mut out.stderr_tail,
        |server, out| download(setup, cell, server, out),
    )?;
    out.exit_code = code;
    Ok(())
}

/// The cell's downloads against a running server, its memory sampled.
fn download(
    setup: &Setup,
    cell: &Cell,
    server: &mut Server,
    out: &mut Observed,
) -> Result<(), TrialError> {
    let settings = setup.settings;
    std::thread::sleep(Duration::from_millis(300));
    let pgid = server.pid();
    out.idle = Some(procs::sample_group(pgid).memory);
    let sampler = Sampler::start(pgid, SAMPLE_INTERVAL);
    // Generous: the whole body at the client's pace, three times over.
    let pace = Duration::from_secs_f64(f64::from(settings.mb) * 1048576.0 / settings.rate as f64);
    let spec = SlowSpec {
        addr: server.addr,
        path: format!("/{}?mb={}", cell.endpoint, settings.mb),
        clients: cell.clients,
        rate: settings.rate,
        recv_buffer: settings.recv_buffer,
        timeout: pace * 3 + Duration::from_secs(10),
    };
    let kernel = KernelTcp::start(SAMPLE_INTERVAL);
    let before = procs::counters(pgid);
    let started = Instant::now();
    out.downloads = slowread::download_all(&spec);
    out.wall_s = started.elapsed().as_secs_f64();
    out.server = Some(procs::counters(pgid).since(before));
    out.kernel_tcp_peak = kernel.stop();
    let sampled = sampler.stop();
    out.peak = Some(sampled.peak);
    out.samples = sampled.samples;
    server.check_alive()?;
    Ok(())
}
