//! `node-single`: execs `node js/main.js node-single ARGS...` (see the crate docs).

fn main() -> std::process::ExitCode {
    node_peers::exec_node("node-single")
}
