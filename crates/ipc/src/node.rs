//! Node's four transports, measured inside Node: `crates/node/js/ipc.js`
//! (Node's standard library only) runs the same round trip as the Rust
//! transports (stamp, touch with [`Check::Pages`](crate::Check), 16-byte
//! ack, warm-up, then until the count or the time is reached) and prints
//! each size's round trips, in nanoseconds, as JSON on stdout. It checks
//! every ack itself and exits 1 at the first wrong one.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{Bounds, IpcError, Transport};

/// The script, in the source tree this crate was built from.
pub const IPC_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../node/js/ipc.js");

/// `node --version`, if `node` is on PATH.
pub fn version() -> Option<String> {
    let output = Command::new("node").arg("--version").output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// What `ipc.js` prints.
#[derive(Deserialize, Debug)]
struct Output {
    transport: Transport,
    sizes: Vec<Size>,
}

#[derive(Deserialize, Debug)]
struct Size {
    bytes: usize,
    ns: Vec<u64>,
}

/// Runs `transport` (a Node one) at each of `sizes` in one `node`
/// process; returns each size's round trips in nanoseconds, in order.
pub fn measure(
    transport: Transport,
    sizes: &[usize],
    bounds: &Bounds,
) -> Result<Vec<Vec<u64>>, IpcError> {
    let list: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let mut child = Command::new("node")
        .arg(IPC_JS)
        .arg(transport.name())
        .arg(list.join(","))
        .arg(bounds.warmup.to_string())
        .arg(bounds.messages.to_string())
        .arg(bounds.duration.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IpcError::Spawn {
            program: "node".into(),
            source,
        })?;
    // Read both pipes on threads so a chatty child cannot block on one.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    // Generous: each size's warm-up and measured time, and node's start.
    let limit =
        Duration::from_secs(30) + bounds.duration * 3 * u32::try_from(sizes.len()).unwrap_or(1);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(crate::io("waiting for node"))? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(IpcError::Node(format!("no answer within {limit:?}")));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let last = stderr.lines().last().unwrap_or("").trim().to_owned();
        return Err(IpcError::Node(format!(
            "{IPC_JS} exited with {status}: {last}"
        )));
    }
    let output: Output =
        serde_json::from_str(&stdout).map_err(|e| IpcError::Node(format!("its output: {e}")))?;
    let sizes_found: Vec<usize> = output.sizes.iter().map(|s| s.bytes).collect();
    if output.transport != transport || sizes_found != sizes {
        return Err(IpcError::Node(format!(
            "asked for {transport} at {sizes:?}, got {} at {sizes_found:?}",
            output.transport
        )));
    }
    Ok(output.sizes.into_iter().map(|s| s.ns).collect())
}
