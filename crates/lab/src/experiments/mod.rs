//! The experiments. Each is a folder of the same few files and plugs into
//! the command line with one line of the `lab` command's subcommand list
//! (`cli`, which depends on the experiments, never the other way).

pub mod balance;
pub mod block;
pub mod conns;
pub mod crash;
pub mod ipc;
pub mod run;
pub mod split;
pub mod stream;
