//! The process peer for this crate's own tests (`lab` runs the same code
//! as `lab ipc-peer`): `ipc-peer TRANSPORT CHECK PARENT_PID`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = ipc::peer::parse_args(&args)
        .and_then(|(t, c, p)| ipc::peer::serve(t, c, p).map_err(|e| e.to_string()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
