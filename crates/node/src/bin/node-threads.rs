//! `node-threads`: execs `node js/main.js node-threads ARGS...` (see the crate docs).

fn main() -> std::process::ExitCode {
    node_peers::exec_node("node-threads")
}
