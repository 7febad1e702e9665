//! `node-cluster`: execs `node js/main.js node-cluster ARGS...` (see the crate docs).

fn main() -> std::process::ExitCode {
    node_peers::exec_node("node-cluster")
}
